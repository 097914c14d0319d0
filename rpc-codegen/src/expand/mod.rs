//! Code generation: the rewritten trait, the proxy, the stub and the
//! compile-time checks on the user's types.
//!
//! Everything is emitted with fully qualified paths (`::core::…`, `::std::…`
//! and the runtime crate's path), so the expansion compiles under
//! `#![no_implicit_prelude]` and whatever the user has in scope. Items other
//! than the trait and the proxy struct live in an anonymous `const _: () =
//! { … };` block, so their names cannot clash with the user's.

mod proxy;
mod stub;

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Pat, TraitItem, TraitItemFn, Type, TypeParamBound};

use crate::ast::{Interface, Method, Return};
use crate::attr::Args;

/// What every generator needs: the model, the runtime path and the names
/// of generated items.
pub(crate) struct Gen<'a> {
    /// The validated trait.
    pub(crate) iface: &'a Interface<'a>,
    /// Path of the runtime crate (`::rpc_core` by default).
    pub(crate) krate: &'a syn::Path,
    /// The `id = …` of the attribute, if given.
    pub(crate) id: Option<&'a Literal>,
    /// The proxy struct: `{Trait}Proxy`.
    pub(crate) proxy: Ident,
    /// The dispatcher wrapping a local object: `__{Trait}Dispatch`.
    pub(crate) dispatcher: Ident,
    /// The `&'static InterfaceInfo` constant inside the `const _` block.
    pub(crate) info: Ident,
}

impl<'a> Gen<'a> {
    /// Names the generated items of `iface`.
    fn new(args: &'a Args, iface: &'a Interface<'a>) -> Self {
        Gen {
            iface,
            krate: &args.krate,
            id: args.id.as_ref(),
            proxy: format_ident!("{}Proxy", iface.name, span = iface.ident.span()),
            dispatcher: format_ident!("__{}Dispatch", iface.name),
            info: format_ident!("__EVENTUAL_INTERFACE"),
        }
    }

    /// `MethodId { interface, index }` for a method.
    pub(crate) fn method_id(&self, method: &Method<'_>) -> TokenStream {
        let (krate, info) = (self.krate, &self.info);
        let index = Literal::u16_suffixed(method.index as u16);
        quote!(#krate::__private::MethodId { interface: #info, index: #index })
    }
}

/// The whole expansion of a validated trait.
pub(crate) fn interface(args: &Args, iface: &Interface<'_>) -> TokenStream {
    let gen = Gen::new(args, iface);
    let trait_def = trait_def(&gen);
    let proxy_struct = proxy::proxy_struct(&gen);
    let info = interface_info(&gen);
    let assertions = type_assertions(&gen);
    let proxy_impls = proxy::proxy_impls(&gen);
    let stub = stub::stub(&gen);
    quote! {
        #trait_def
        #proxy_struct
        const _: () = {
            #info
            #assertions
            #proxy_impls
            #stub
        };
    }
}

/// The user's trait, with `Send + Sync + 'static` supertraits and each
/// `async fn` turned into a `fn` returning a `Send` future.
fn trait_def(gen: &Gen<'_>) -> TokenStream {
    let mut item = gen.iface.original.clone();
    let bounds: [TypeParamBound; 3] = [
        syn::parse_quote!(::core::marker::Send),
        syn::parse_quote!(::core::marker::Sync),
        syn::parse_quote!('static),
    ];
    item.colon_token.get_or_insert_with(Default::default);
    item.supertraits.extend(bounds);
    let methods = item.items.iter_mut().filter_map(|item| match item {
        TraitItem::Fn(method) => Some(method),
        _ => None,
    });
    for (method, model) in methods.zip(&gen.iface.methods) {
        trait_method(method, model);
    }
    quote!(#item)
}

/// Rewrites one trait method in place: plain argument names, and a `Send`
/// future instead of `async`.
fn trait_method(method: &mut TraitItemFn, model: &Method<'_>) {
    let typed = method.sig.inputs.iter_mut().filter_map(|arg| match arg {
        syn::FnArg::Typed(arg) => Some(arg),
        syn::FnArg::Receiver(_) => None,
    });
    for (arg, model) in typed.zip(&model.args) {
        if !matches!(*arg.pat, Pat::Wild(_)) {
            let name = &model.name;
            *arg.pat = syn::parse_quote!(#name);
        }
    }
    if method.sig.asyncness.take().is_some() {
        let output = match &method.sig.output {
            syn::ReturnType::Default => quote!(()),
            syn::ReturnType::Type(_, ty) => quote!(#ty),
        };
        let span = method.sig.output.span();
        method.sig.output = syn::parse_quote_spanned! {span=>
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
    }
}

/// The interface's static description: id, name and method names.
fn interface_info(gen: &Gen<'_>) -> TokenStream {
    let (krate, info, name) = (gen.krate, &gen.info, &gen.iface.name);
    let id = match gen.id {
        Some(id) => quote!(#id),
        None => quote!(#krate::__private::interface_id(#name)),
    };
    let methods = gen.iface.methods.iter().map(Method::name);
    quote! {
        const #info: &'static #krate::__private::InterfaceInfo = &#krate::__private::InterfaceInfo {
            id: #id,
            name: #name,
            methods: &[#(#methods),*],
        };
    }
}

/// Compile-time checks that every type crossing the connection has the
/// traits it needs. Each check is spanned at the user's type, so a missing
/// `Serialize` is reported there.
fn type_assertions(gen: &Gen<'_>) -> TokenStream {
    let krate = gen.krate;
    let checks = gen.iface.methods.iter().flat_map(|method| method_assertions(method));
    quote! {
        const fn __assert_value<T>()
        where
            T: #krate::__private::serde::Serialize
                + #krate::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + 'static,
        {}
        const fn __assert_error<E>()
        where
            E: #krate::__private::serde::Serialize
                + #krate::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + 'static
                + ::core::convert::From<#krate::RpcError>
                + ::core::fmt::Debug,
        {}
        const fn __assert_capability<C: #krate::Capability>() {}
        #(#checks)*
    }
}

/// The checks for one method's argument and return types.
fn method_assertions(method: &Method<'_>) -> Vec<TokenStream> {
    let mut checks: Vec<TokenStream> = method.args.iter().map(|arg| assert(arg.ty, "value")).collect();
    match method.ret {
        Return::Unit => {}
        Return::Value(ty) => checks.push(assert(ty, "value")),
        Return::Proxy(ty) => checks.push(assert(ty, "capability")),
        Return::Result { ok, err } => {
            checks.push(assert(ok, "value"));
            checks.push(assert(err, "error"));
        }
    }
    checks
}

/// `const _: () = __assert_{kind}::<ty>();`, spanned at `ty`.
fn assert(ty: &Type, kind: &str) -> TokenStream {
    let check = format_ident!("__assert_{}", kind, span = ty.span());
    quote_spanned!(ty.span()=> const _: () = #check::<#ty>();)
}

#[cfg(test)]
mod tests;
