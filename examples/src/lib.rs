//! Examples for the eventual RPC framework.
