//! The server side: a dispatcher that routes incoming calls to a local
//! object implementing the trait.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;

use super::{checked, is_byte_vec, parens_at, respanned, wire_arg_type, Check, Gen};
use crate::ast::{Method, Return};

/// The dispatcher struct and its `Dispatch` impl.
pub(crate) fn stub(gen: &Gen<'_>) -> TokenStream {
    let dispatcher_struct = dispatcher_struct(gen);
    let dispatch_impl = dispatch_impl(gen);
    quote!(#dispatcher_struct #dispatch_impl)
}

/// `struct __{Trait}Dispatch<T>(T);`, private to the `const _` block.
fn dispatcher_struct(gen: &Gen<'_>) -> TokenStream {
    let dispatcher = &gen.dispatcher;
    quote! {
        struct #dispatcher<__T>(__T);
    }
}

/// `impl Dispatch for __{Trait}Dispatch<T>`: one match arm per method.
fn dispatch_impl(gen: &Gen<'_>) -> TokenStream {
    let (krate, info, dispatcher) = (gen.krate, &gen.info, &gen.dispatcher);
    let trait_ident = gen.iface.ident;
    let call = call_ident();
    let arms = gen.iface.methods.iter().map(|method| dispatch_arm(gen, method));
    quote! {
        #[allow(deprecated)]
        impl<__T: #trait_ident> #krate::__private::Dispatch for #dispatcher<__T> {
            fn interface(&self) -> &'static #krate::__private::InterfaceInfo {
                #info
            }

            fn dispatch(
                self: ::std::sync::Arc<Self>,
                #call: #krate::__private::IncomingCall,
            ) -> #krate::__private::DispatchFuture {
                match #krate::__private::IncomingCall::method(&#call) {
                    #(#arms)*
                    _ => #krate::__private::unimplemented(#info, &#call),
                }
            }
        }
    }
}

/// The `IncomingCall` local, hygienic so no user name can capture it.
fn call_ident() -> Ident {
    Ident::new("__call", Span::mixed_site())
}

/// The decoding error local, hygienic like [`call_ident`].
fn err_ident() -> Ident {
    Ident::new("__err", Span::mixed_site())
}

/// The stub's name for the writer of a returned sequence.
fn writer_ident() -> Ident {
    Ident::new("__writer", Span::mixed_site())
}

/// The stub's name for argument `i` (hygienic: never the user's names).
fn arg_ident(i: usize) -> Ident {
    format_ident!("__arg{}", i, span = Span::mixed_site())
}

/// One match arm: decode the arguments now, then run the method in the
/// returned future.
fn dispatch_arm(gen: &Gen<'_>, method: &Method<'_>) -> TokenStream {
    let index = Literal::u16_suffixed(method.id());
    let decode = decode_args(gen, method);
    let reply = reply(gen, method);
    quote! {
        #index => {
            #decode
            ::std::boxed::Box::pin(async move { #reply })
        }
    }
}

/// Decodes the argument tuple; a malformed one fails the call at once,
/// without running user code.
fn decode_args(gen: &Gen<'_>, method: &Method<'_>) -> TokenStream {
    let (krate, call, err) = (gen.krate, call_ident(), err_ident());
    if method.args.is_empty() && !matches!(method.ret, Return::Sequence { .. } | Return::Bytes(_)) {
        return decode_no_args(gen);
    }
    let mut names: Vec<Ident> = (0..method.args.len()).map(arg_ident).collect();
    let mut types: Vec<TokenStream> = method.args.iter().map(|arg| wire_arg_type(gen, arg.ty)).collect();
    // The caller sent the writer of a returned stream as a last argument.
    match method.ret {
        Return::Sequence { item, .. } => {
            let item = checked(item, Check::Value);
            names.push(writer_ident());
            types.push(quote!(#krate::SequenceWriter<#item>));
        }
        Return::Bytes(_) => {
            names.push(writer_ident());
            types.push(quote!(#krate::BytesWriter));
        }
        _ => {}
    }
    let args = Ident::new("__args", Span::mixed_site());
    // Errors decoding the tuple point at the method's parameter list.
    let parens = method.original.sig.paren_token.span.join();
    let path = respanned(quote!(#krate::__private::IncomingCall::args), parens);
    let tuple = parens_at(quote!(#(#types,)*), parens);
    let call_args = parens_at(quote!(&#call), parens);
    let decode = quote_spanned!(parens=> #path::<#tuple> #call_args);
    // A `Vec<u8>` came as a `ByteVec`: unwrapped for the method.
    let unwrap = method.args.iter().enumerate().filter(|(_, arg)| is_byte_vec(arg.ty)).map(|(i, _)| {
        let name = arg_ident(i);
        quote!(let #name = #name.0;)
    });
    quote! {
        let (#(#names,)*) = match #decode {
            ::core::result::Result::Ok(#args) => #args,
            ::core::result::Result::Err(#err) => return #krate::__private::ready_err(#err),
        };
        #(#unwrap)*
    }
}

/// Checks that a method without arguments was sent an empty tuple.
fn decode_no_args(gen: &Gen<'_>) -> TokenStream {
    let (krate, call, err) = (gen.krate, call_ident(), err_ident());
    quote! {
        if let ::core::result::Result::Err(#err) = #krate::__private::IncomingCall::args::<()>(&#call) {
            return #krate::__private::ready_err(#err);
        }
    }
}

/// Calls the user's method and encodes its result.
fn reply(gen: &Gen<'_>, method: &Method<'_>) -> TokenStream {
    let (krate, trait_ident, ident) = (gen.krate, gen.iface.ident, method.ident);
    let names = (0..method.args.len()).map(arg_ident);
    let mut invoke = quote!(<__T as #trait_ident>::#ident(&self.0 #(, #names)*));
    if method.is_async {
        invoke = quote!(#invoke.await);
    }
    match method.ret {
        Return::Unit => quote! {
            #invoke;
            #krate::__private::reply_value(())
        },
        Return::Sequence { item, .. } => {
            let item = checked(item, Check::Value);
            let splice = quote!(#krate::__private::splice::<#item>);
            returned_stream(gen, method, invoke, splice, quote!(#krate::__private::fail_sequence))
        }
        Return::Bytes(_) => returned_stream(
            gen,
            method,
            invoke,
            quote!(#krate::__private::splice_bytes),
            quote!(#krate::__private::fail_bytes),
        ),
        // A `Vec<u8>` result goes as a `ByteVec` (see `wire_arg_type`).
        Return::Value(ty) if is_byte_vec(ty) => {
            quote!(#krate::__private::reply_value(#krate::__private::ByteVec(#invoke)))
        }
        Return::Value(ty) | Return::Proxy(ty) => {
            let ty = checked(ty, Check::Value);
            quote!(#krate::__private::reply_value::<#ty>(#invoke))
        }
        Return::Result { ok, err } if is_byte_vec(ok) => {
            let err = checked(err, Check::Error);
            quote!(#krate::__private::reply_result::<#krate::__private::ByteVec, #err>(
                ::core::result::Result::map(#invoke, #krate::__private::ByteVec)
            ))
        }
        Return::Result { ok, err } => {
            let (ok, err) = (checked(ok, Check::Value), checked(err, Check::Error));
            quote!(#krate::__private::reply_result::<#ok, #err>(#invoke))
        }
    }
}

/// A returned stream: splice what the handler returns into the caller's
/// writer. If the handler panics before returning it, the writer ends with
/// the panic's error (rather than an abort) and the call fails with it too.
fn returned_stream(
    gen: &Gen<'_>,
    method: &Method<'_>,
    invoke: TokenStream,
    splice: TokenStream,
    fail: TokenStream,
) -> TokenStream {
    let (krate, info, writer) = (gen.krate, &gen.info, writer_ident());
    let index = Literal::u16_suffixed(method.id());
    let (stream, err) = (Ident::new("__stream", Span::mixed_site()), err_ident());
    quote! {
        match #krate::__private::catch_panic(#info, #index, async { #invoke }).await {
            ::core::result::Result::Ok(#stream) => {
                #splice(#stream, #writer);
                #krate::__private::reply_value(())
            }
            ::core::result::Result::Err(#err) => {
                #fail(#writer, ::core::clone::Clone::clone(&#err));
                ::core::result::Result::Err(#err)
            }
        }
    }
}
