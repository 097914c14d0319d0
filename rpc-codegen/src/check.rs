//! The validation pass: everything `#[eventual]` cannot turn into a remote
//! interface is reported here, each error spanning the offending tokens.
//!
//! Checks never stop early: a trait with five problems gets five errors in
//! one compile run. Type-level requirements that need the compiler (is this
//! argument `Serialize`?) are not checked here but by the compiler, on the
//! checked types of the expansion (see `expand::checked`), spanned at the
//! user's types.

use std::collections::HashMap;

use syn::visit::{self, Visit};
use syn::{Attribute, Generics, ItemTrait, Receiver, Signature, TraitItem, Type};

use crate::ast::{Interface, Method};
use crate::ctxt::Ctxt;

/// Method ids are `u16` declaration indexes.
pub(crate) const MAX_METHODS: usize = u16::MAX as usize + 1;

/// Arguments travel as one tuple, and serde implements tuples up to 16.
pub(crate) const MAX_ARGS: usize = 16;

/// Names of items generated on every proxy, which a method must not shadow.
const RESERVED: &[&str] = &[
    "new",
    "broken",
    "when_broken",
    "client",
    "from_client",
    "clone",
    "clone_from",
    "fmt",
    "serialize",
    "deserialize",
];

/// Validates the whole interface, recording every problem in `cx`.
pub(crate) fn check(cx: &Ctxt, iface: &Interface<'_>) {
    check_trait(cx, iface.original);
    iface.original.items.iter().for_each(|item| check_item(cx, item));
    iface.methods.iter().for_each(|method| check_method(cx, iface, method));
    check_duplicates(cx, iface);
    check_method_count(cx, iface);
}

/// The trait header: no `unsafe`, `auto`, generics or `where` clause.
fn check_trait(cx: &Ctxt, item: &ItemTrait) {
    if let Some(unsafety) = &item.unsafety {
        cx.error_spanned_by(unsafety, "#[eventual] traits cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        cx.error_spanned_by(auto, "#[eventual] traits cannot be auto traits");
    }
    check_generics(cx, &item.generics, "generic traits are not supported by #[eventual]: a capability has one fixed set of methods with concrete types");
}

/// Generic parameters and `where` clauses, on a trait or a method.
fn check_generics(cx: &Ctxt, generics: &Generics, msg: &str) {
    if !generics.params.is_empty() {
        cx.error_spanned_by(generics, msg);
    }
    if let Some(clause) = &generics.where_clause {
        cx.error_spanned_by(clause, "`where` clauses are not supported by #[eventual]");
    }
}

/// Items other than methods.
fn check_item(cx: &Ctxt, item: &TraitItem) {
    let what = match item {
        TraitItem::Fn(_) => return,
        TraitItem::Const(_) => "associated constants are",
        TraitItem::Type(_) => "associated types are",
        TraitItem::Macro(_) => "macro invocations are",
        _ => "this item is",
    };
    let msg = format!("{what} not supported in #[eventual] traits: only `&self` methods are");
    cx.error_spanned_by(item, msg);
}

/// One method: signature, receiver, body, attributes, name and types.
fn check_method(cx: &Ctxt, iface: &Interface<'_>, method: &Method<'_>) {
    let sig = &method.original.sig;
    check_qualifiers(cx, sig);
    check_generics(cx, &sig.generics, generic_method_message(&sig.generics));
    check_receiver(cx, sig);
    if let Some(body) = &method.original.default {
        let msg = format!(
            "default method bodies are not supported by #[eventual]; implement `{}` in each impl of `{}` instead",
            method.name(),
            iface.name
        );
        cx.error_spanned_by(body, msg);
    }
    method.original.attrs.iter().for_each(|attr| check_method_attr(cx, attr));
    check_name(cx, iface, method);
    check_arg_count(cx, method);
    for arg in &method.args {
        check_type(cx, arg.ty);
    }
    if let syn::ReturnType::Type(_, ty) = &sig.output {
        check_type(cx, ty);
    }
}

/// Why generic parameters on a method are rejected, lifetimes or not.
fn generic_method_message(generics: &Generics) -> &'static str {
    let lifetimes_only = generics.params.iter().all(|param| matches!(param, syn::GenericParam::Lifetime(_)));
    if lifetimes_only {
        "lifetime parameters are not supported by #[eventual]: arguments travel by value and cannot borrow"
    } else {
        "generic methods are not supported by #[eventual]: arguments and results travel over the wire and need concrete types"
    }
}

/// `const`, `unsafe`, `extern` and variadic methods.
fn check_qualifiers(cx: &Ctxt, sig: &Signature) {
    if let Some(constness) = &sig.constness {
        cx.error_spanned_by(constness, "`const fn` methods are not supported by #[eventual]");
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error_spanned_by(
            unsafety,
            "`unsafe fn` methods are not supported by #[eventual]: a remote caller cannot uphold a safety contract",
        );
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, "`extern` methods are not supported by #[eventual]");
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(variadic, "variadic methods are not supported by #[eventual]");
    }
}

/// The receiver must be exactly `&self`.
fn check_receiver(cx: &Ctxt, sig: &Signature) {
    let Some(receiver) = sig.receiver() else {
        let msg = format!("#[eventual] methods must take `&self`: `{}` has no receiver", sig.ident);
        return cx.syn_error(syn::Error::new(sig.paren_token.span.join(), msg));
    };
    if let Some(msg) = receiver_problem(receiver) {
        cx.error_spanned_by(receiver, msg);
    }
}

/// Why a receiver is not `&self`, if it is not.
fn receiver_problem(receiver: &Receiver) -> Option<&'static str> {
    if receiver.colon_token.is_some() {
        return Some("#[eventual] methods must take `&self`; typed receivers like `self: Box<Self>` are not supported");
    }
    match &receiver.reference {
        None => Some("#[eventual] methods must take `&self`, not `self`: a capability is shared, never consumed by a call"),
        Some(_) if receiver.mutability.is_some() => Some("#[eventual] methods must take `&self`, not `&mut self`: calls may run concurrently, so use interior mutability (e.g. a Mutex) for state"),
        Some((_, Some(_))) => Some("#[eventual] methods must take `&self` with an elided lifetime"),
        Some((_, None)) => None,
    }
}

/// `#[cfg]` on a method would shift the method ids between builds.
fn check_method_attr(cx: &Ctxt, attr: &Attribute) {
    if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
        cx.error_spanned_by(attr, "#[cfg] is not supported on #[eventual] methods: method ids are declaration indexes, and client and server must agree on them");
    }
}

/// A method must not shadow an item generated on the proxy.
fn check_name(cx: &Ctxt, iface: &Interface<'_>, method: &Method<'_>) {
    let name = method.name();
    if RESERVED.contains(&name.as_str()) {
        let msg = format!(
            "method `{name}` clashes with `{name}` generated on `{}Proxy` by #[eventual]; rename the method",
            iface.name
        );
        cx.error_spanned_by(method.ident, msg);
    }
}

/// At most [`MAX_ARGS`] arguments; the error spans the first one too many.
fn check_arg_count(cx: &Ctxt, method: &Method<'_>) {
    if let Some(extra) = method.args.get(MAX_ARGS) {
        let msg = format!("too many arguments: #[eventual] methods take at most {MAX_ARGS} (the largest tuple serde supports); group them in a struct");
        cx.error_spanned_by(extra.original, msg);
    }
}

/// Two methods with one name would clash in the proxy too.
fn check_duplicates(cx: &Ctxt, iface: &Interface<'_>) {
    let mut seen = HashMap::new();
    for method in &iface.methods {
        if seen.insert(method.name(), method.ident).is_some() {
            let msg = format!("duplicate method `{}` in an #[eventual] trait", method.name());
            cx.error_spanned_by(method.ident, msg);
        }
    }
}

/// Method ids are `u16`, so at most [`MAX_METHODS`] methods.
fn check_method_count(cx: &Ctxt, iface: &Interface<'_>) {
    let count = iface.methods.len();
    if count > MAX_METHODS {
        let msg = format!(
            "too many methods: #[eventual] traits have at most {MAX_METHODS} (method ids are u16), `{}` has {count}",
            iface.name
        );
        cx.error_spanned_by(iface.ident, msg);
    }
}

/// Syntactic checks on an argument or return type: nothing borrowed,
/// unsized, opaque or local to this process.
fn check_type(cx: &Ctxt, ty: &Type) {
    TypeChecker { cx }.visit_type(ty);
}

/// Walks a type and reports each part that cannot cross a connection.
struct TypeChecker<'c> {
    cx: &'c Ctxt,
}

impl<'ast> Visit<'ast> for TypeChecker<'_> {
    fn visit_type_reference(&mut self, ty: &'ast syn::TypeReference) {
        self.cx.error_spanned_by(
            ty,
            "references cannot cross a connection: use an owned type (e.g. `String` for `&str`, `Vec<T>` for `&[T]`)",
        );
    }

    fn visit_type_impl_trait(&mut self, ty: &'ast syn::TypeImplTrait) {
        self.cx.error_spanned_by(ty, "`impl Trait` is not supported in #[eventual] signatures: use a concrete type that is Serialize + DeserializeOwned");
    }

    fn visit_type_trait_object(&mut self, ty: &'ast syn::TypeTraitObject) {
        self.cx.error_spanned_by(ty, "`dyn Trait` cannot cross a connection: use a concrete type, or an #[eventual] trait's proxy to pass an object");
    }

    fn visit_type_ptr(&mut self, ty: &'ast syn::TypePtr) {
        self.cx.error_spanned_by(ty, "raw pointers cannot cross a connection");
    }

    fn visit_type_bare_fn(&mut self, ty: &'ast syn::TypeBareFn) {
        self.cx.error_spanned_by(
            ty,
            "function pointers cannot cross a connection: pass an #[eventual] trait's proxy instead",
        );
    }

    fn visit_type_infer(&mut self, ty: &'ast syn::TypeInfer) {
        self.cx.error_spanned_by(ty, "types in #[eventual] signatures must be written out");
    }

    fn visit_type_path(&mut self, ty: &'ast syn::TypePath) {
        if ty.qself.is_none() && ty.path.segments.first().is_some_and(|s| s.ident == "Self") {
            return self.cx.error_spanned_by(
                ty,
                "`Self` is not supported in #[eventual] signatures: name the type, e.g. the generated proxy",
            );
        }
        visit::visit_type_path(self, ty);
    }

    fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
        if lifetime.ident != "static" {
            self.cx.error_spanned_by(lifetime, "borrowed data cannot cross a connection: only `'static` lifetimes are allowed in #[eventual] signatures");
        }
    }
}

#[cfg(test)]
mod tests;
