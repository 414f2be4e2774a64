//! Integration tests of the marketplace sandbox: every fake marketplace served over real HTTP on
//! 127.0.0.1, driven with reqwest, checked against the documents and the digest.

mod allesgo;
mod c2c;
mod core;
mod gittigidiyor;
mod i1;
mod labs;
