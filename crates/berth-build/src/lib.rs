//! Image builds for Berth.
//!
//! [`dockerfile`] is a pure parser for Dockerfiles following BuildKit's grammar (parser
//! directives, continuations, heredocs, JSON/shell forms, every instruction and its flags) and
//! BuildKit's shell-word lexer for variable expansion. The build executor lives beside it.

pub mod build;
pub mod dockerfile;
