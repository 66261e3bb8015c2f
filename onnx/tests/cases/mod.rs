mod bad_input;
mod fixtures;
mod harness;
mod shared_models;
