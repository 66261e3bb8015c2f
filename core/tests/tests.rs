//! Integration tests of `certify-core`: property tests of the forward, reverse and tangent passes
//! on random small networks (every layer kind), forward values against direct loops, and error
//! cases, parameter gradients and training. One test binary; the modules live beside this file.
//!
//! `PROPTEST_CASES=N cargo test --release -p certify-core` runs N cases per property (default 64).

mod checks;
mod compact;
mod errors;
mod penalty;
mod properties;
mod reference;
mod strategies;
mod training;
