mod bad_input;
mod build;
mod export;
mod fixtures;
mod harness;
mod shared_models;
