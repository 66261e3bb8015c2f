//! The library part of the `certify` command-line tool: data set loading and its error type.

pub mod data;
pub mod error;

pub use error::Error;
