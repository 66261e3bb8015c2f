//! Tests of the C API: the committed header matches the code, the calls behave as documented,
//! and a C program built with the system compiler agrees with the Rust engine and the CLI.

mod api;
mod c_example;
mod header;
mod support;
