//! Subcommands, one module each, each with `Args` and `run`.

pub mod cat;
pub mod check;
pub mod export;
pub mod import;
pub mod inspect;
pub mod verify;
