//! Error collection: every misuse of a trait is reported in one compile run.
//!
//! Parsing and validation never stop at the first problem. Each stage
//! records spanned errors here and keeps going; [`Ctxt::check`] then
//! combines them into one [`syn::Error`] whose `to_compile_error` emits one
//! `compile_error!` per problem, each pointing at the user's tokens.

use std::cell::RefCell;
use std::fmt::Display;

use quote::ToTokens;

/// Collects errors found while reading and validating one `#[eventual]` trait.
///
/// A `Ctxt` must be consumed by [`Ctxt::check`]; dropping it unchecked is a
/// bug in the macro and panics, so that no error is silently lost.
pub(crate) struct Ctxt {
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    /// An empty context.
    pub(crate) fn new() -> Self {
        Ctxt { errors: RefCell::new(Some(Vec::new())) }
    }

    /// Records `msg` spanning `tokens` (the first to the last token).
    pub(crate) fn error_spanned_by<T: ToTokens, M: Display>(&self, tokens: T, msg: M) {
        self.syn_error(syn::Error::new_spanned(tokens.into_token_stream(), msg));
    }

    /// Records an error produced by `syn` (or built by hand).
    pub(crate) fn syn_error(&self, err: syn::Error) {
        self.errors.borrow_mut().as_mut().expect("Ctxt used after check").push(err);
    }

    /// Consumes the context: `Ok` if nothing was recorded, else all errors
    /// combined into one, in the order they were found.
    pub(crate) fn check(self) -> syn::Result<()> {
        let errors = self.errors.borrow_mut().take().expect("Ctxt checked twice");
        let mut errors = errors.into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for err in errors {
            combined.combine(err);
        }
        Err(combined)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.errors.borrow().is_some() {
            panic!("forgot to check for errors");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ctxt;
    use proc_macro2::Span;

    #[test]
    fn empty_context_checks_ok() {
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    fn all_errors_are_combined_in_order() {
        let cx = Ctxt::new();
        cx.error_spanned_by(quote::quote!(a), "first");
        cx.syn_error(syn::Error::new(Span::call_site(), "second"));
        let err = cx.check().unwrap_err();
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    #[should_panic(expected = "forgot to check for errors")]
    fn unchecked_context_panics() {
        let _cx = Ctxt::new();
    }
}
