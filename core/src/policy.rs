//! Policies: parse, compile, evaluate.
