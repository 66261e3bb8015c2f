//! Integration tests of the certify tool: reference values and the binary's behaviour.

mod binary;
mod common;
mod harden;
mod reference;
