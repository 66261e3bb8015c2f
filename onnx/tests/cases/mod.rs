mod bad_input;
mod export;
mod fixtures;
mod harness;
mod shared_models;
