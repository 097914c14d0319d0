//! The expansion engine behind `#[eventual]`, as a plain library.
//!
//! [`expand()`] takes the attribute's arguments and the annotated item and
//! returns the code that replaces them. It works in stages, each in its own
//! module: `attr` reads the attribute's arguments, `ast` builds a model of
//! the trait that keeps every original span, `check` validates it
//! (collecting every error in a `ctxt::Ctxt`), and `expand` generates the
//! rewritten trait, the proxy and the server stub.
//!
//! Because it is an ordinary library, it can be unit tested, and used from a
//! build script. The `rpc-macros` crate is a thin shim over it.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Item, ItemTrait};

/// Expands `#[eventual(attr)] item`.
///
/// On success the result is the rewritten trait followed by its proxy, stub
/// and compile-time checks. When the trait cannot be expanded, the result is
/// the item unchanged plus one `compile_error!` per problem found, so the
/// user sees every mistake at once and no errors cascading from a broken
/// expansion.
pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_trait = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Trait(item_trait)) => item_trait,
        Ok(other) => return fallback(item, not_a_trait(&other)),
        Err(err) => return fallback(item, err),
    };
    match expand_trait(attr, &item_trait) {
        Ok(expanded) => expanded,
        Err(err) => fallback(item, err),
    }
}

/// Parses the arguments, models and validates the trait, then generates.
fn expand_trait(attr: TokenStream, item: &ItemTrait) -> syn::Result<TokenStream> {
    let cx = ctxt::Ctxt::new();
    let args = attr::Args::parse(&cx, attr);
    let iface = ast::Interface::from_syn(item);
    check::check(&cx, &iface);
    cx.check()?;
    Ok(expand::interface(&args, &iface))
}

/// The error for an `#[eventual]` placed on something other than a trait.
fn not_a_trait(item: &Item) -> syn::Error {
    let tokens = match item {
        Item::Struct(item) => item.struct_token.to_token_stream(),
        Item::Enum(item) => item.enum_token.to_token_stream(),
        Item::Fn(item) => item.sig.fn_token.to_token_stream(),
        Item::Impl(item) => item.impl_token.to_token_stream(),
        other => other.to_token_stream(),
    };
    syn::Error::new_spanned(tokens, "#[eventual] can only be applied to a trait")
}

/// The item unchanged, followed by the errors (thiserror's fallback).
fn fallback(item: TokenStream, err: syn::Error) -> TokenStream {
    let errors = err.into_compile_error();
    quote::quote!(#item #errors)
}
