//! Integration tests of the certify tool: reference values and the binary's behaviour.

mod bad_inputs;
mod binary;
mod common;
mod export;
mod gpu;
mod harden;
mod reference;
