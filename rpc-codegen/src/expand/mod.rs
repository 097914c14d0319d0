//! Code generation: the rewritten trait, the proxy, the stub and the
//! compile-time checks on the user's types.
//!
//! Every user type that meets the runtime goes through [`checked`], so a
//! type lacking a trait it needs (`Serialize`, `Send`, ...) is reported once,
//! at the user's type, without errors cascading from generated code.
//!
//! Everything is emitted with fully qualified paths (`::core::…`, `::std::…`
//! and the runtime crate's path), so the expansion compiles under
//! `#![no_implicit_prelude]` and whatever the user has in scope. Items other
//! than the trait and the proxy struct live in an anonymous `const _: () =
//! { … };` block, so their names cannot clash with the user's.

mod proxy;
mod stub;

use proc_macro2::{Delimiter, Group, Literal, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Ident, Pat, TraitItem, TraitItemFn, Type, TypeParamBound};

use crate::ast::{Interface, Method};
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
        let index = Literal::u16_suffixed(method.id());
        quote!(#krate::__private::MethodId { interface: #info, index: #index })
    }
}

/// The whole expansion of a validated trait.
pub(crate) fn interface(args: &Args, iface: &Interface<'_>) -> TokenStream {
    let gen = Gen::new(args, iface);
    let trait_def = trait_def(&gen);
    let proxy_struct = proxy::proxy_struct(&gen);
    let info = interface_info(&gen);
    let checks = checked_traits(&gen);
    let proxy_impls = proxy::proxy_impls(&gen);
    let stub = stub::stub(&gen);
    quote! {
        #trait_def
        #proxy_struct
        const _: () = {
            #info
            #checks
            #proxy_impls
            #stub
        };
    }
}

/// The user's trait, with `Send + Sync + 'static` supertraits and each
/// `async fn` turned into a `fn` returning a `Send` future.
fn trait_def(gen: &Gen<'_>) -> TokenStream {
    let mut item = gen.iface.original.clone();
    let bounds: [TypeParamBound; 3] =
        [syn::parse_quote!(::core::marker::Send), syn::parse_quote!(::core::marker::Sync), syn::parse_quote!('static)];
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

/// The kinds of checked types, each a trait implemented for
/// `PhantomData<T>` when `T` has what the position needs.
#[derive(Clone, Copy)]
pub(crate) enum Check {
    /// An argument or a result: `Serialize + DeserializeOwned + Send + 'static`.
    Value,
    /// The `E` of a `Result<T, E>`: a value and `Debug`. (`From<RpcError>` is
    /// asked only where a promise of it is awaited as it is; see `CallError`.)
    Error,
}

impl Check {
    /// The helper trait that checks this kind.
    fn trait_ident(self, span: Span) -> Ident {
        let name = match self {
            Check::Value => "__Transferable",
            Check::Error => "__TransferableError",
        };
        Ident::new(name, span)
    }
}

/// The helper traits behind [`checked`]. Each is implemented for
/// `PhantomData<T>` exactly when `T` has the traits its position needs, and
/// projects back to `T`.
fn checked_traits(gen: &Gen<'_>) -> TokenStream {
    let krate = gen.krate;
    let serde = quote!(#krate::__private::serde);
    let value = quote! {
        #serde::Serialize + #serde::de::DeserializeOwned + ::core::marker::Send + 'static
    };
    let [transferable, error] = [Check::Value, Check::Error].map(|c| c.trait_ident(Span::call_site()));
    quote! {
        #[allow(dead_code)]
        trait #transferable { type T; }
        impl<T: #value> #transferable for ::core::marker::PhantomData<T> { type T = T; }
        #[allow(dead_code)]
        trait #error { type T; }
        impl<T: #value + ::core::fmt::Debug> #error
            for ::core::marker::PhantomData<T> { type T = T; }
    }
}

/// Whether `ty` is written `Vec<u8>` (bare, or as `std::vec::Vec<u8>` /
/// `alloc::vec::Vec<u8>`): such an argument travels as the runtime's
/// `ByteVec`, the same bytes on the wire, decoded in one copy instead of one
/// serde call per byte.
pub(crate) fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<String> = path.path.segments.iter().map(|s| s.ident.to_string()).collect();
    let prefix_ok = match segments.as_slice() {
        [_] => path.path.leading_colon.is_none(),
        [krate, vec, _] => (krate == "std" || krate == "alloc") && vec == "vec",
        _ => false,
    };
    let Some(last) = path.path.segments.last() else { return false };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return false };
    let is_u8 = |arg: &syn::GenericArgument| matches!(arg, syn::GenericArgument::Type(Type::Path(p)) if p.qself.is_none() && p.path.is_ident("u8"));
    prefix_ok && last.ident == "Vec" && args.args.len() == 1 && args.args.first().is_some_and(is_u8)
}

/// The type an argument has in the argument tuple: `ByteVec` for a
/// `Vec<u8>`, else the user's type (checked).
pub(crate) fn wire_arg_type(gen: &Gen<'_>, ty: &Type) -> TokenStream {
    let krate = gen.krate;
    if is_byte_vec(ty) {
        quote!(#krate::__private::ByteVec)
    } else {
        checked(ty, Check::Value)
    }
}

/// The expression that puts argument `name` of type `ty` in the tuple.
pub(crate) fn wire_arg_value(gen: &Gen<'_>, name: &Ident, ty: &Type) -> TokenStream {
    let krate = gen.krate;
    if is_byte_vec(ty) {
        quote!(#krate::__private::ByteVec(#name))
    } else {
        quote!(#name)
    }
}

/// `ty`, as a projection that only resolves when `ty` has what `check`
/// asks for: `<PhantomData<ty> as __Transferable>::T`.
///
/// Generated code uses this wherever a user type meets the runtime, so a
/// missing trait is reported once, spanning the user's type, and the failed
/// projection silences the errors that would cascade from it.
pub(crate) fn checked(ty: &Type, check: Check) -> TokenStream {
    let (first, last) = first_and_last_span(ty);
    let trait_ident = check.trait_ident(last);
    let open = quote_spanned!(first=> <::core::marker::PhantomData<);
    let close = quote_spanned!(last=> > as #trait_ident>::T);
    quote!(#open #ty #close)
}

/// The spans of the first and last tokens of `tokens`: tokens generated
/// with the first span at their start and the last at their end make rustc
/// underline exactly the user's tokens (`Span::join` is not stable).
pub(crate) fn first_and_last_span<T: ToTokens>(tokens: &T) -> (Span, Span) {
    let mut tokens = tokens.to_token_stream().into_iter();
    let first = tokens.next().map_or_else(Span::call_site, |t| t.span());
    let last = tokens.last().map_or(first, |t| t.span());
    (first, last)
}

/// `( stream )` with its parentheses at `span` (and the tokens inside
/// untouched), for calls whose errors must point at user code.
pub(crate) fn parens_at(stream: TokenStream, span: Span) -> Group {
    let mut group = Group::new(Delimiter::Parenthesis, stream);
    group.set_span(span);
    group
}

/// `tokens` with every span, nested ones included, set to `span`, so that
/// errors in generated code point at the user's tokens it stems from.
pub(crate) fn respanned(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let stream = respanned(group.stream(), span);
                token = TokenTree::Group(Group::new(group.delimiter(), stream));
            }
            token.set_span(span);
            token
        })
        .collect()
}

#[cfg(test)]
mod tests;
