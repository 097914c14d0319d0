//! The client side: the `{Trait}Proxy` capability type and its methods.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Attribute, Ident, Type};

use super::{checked, first_and_last_span, parens_at, respanned, wire_arg_type, wire_arg_value, Check, Gen};
use crate::ast::{Method, Return};

/// `struct {Trait}Proxy { client: Client }`, with the trait's visibility.
pub(crate) fn proxy_struct(gen: &Gen<'_>) -> TokenStream {
    let (vis, proxy, krate) = (gen.iface.vis, &gen.proxy, gen.krate);
    let doc = format!(
        " A capability for [`{name}`]: a handle on an object implementing it, in this \
         process or behind a connection.\n\n Its methods mirror those of [`{name}`] but \
         return at once with an eventual value: a promise, or a proxy that can be called \
         before the call that returns it has finished (pipelining). Calls made on one \
         capability reach the object in the order they were made.\n\n Wrap a local object \
         with [`{proxy}::new`]. A proxy can be cloned, and sent as an argument or result of \
         other calls.",
        name = gen.iface.name,
    );
    quote! {
        #[doc = #doc]
        #vis struct #proxy {
            client: #krate::Client,
        }
    }
}

/// Every impl of the proxy: std and serde traits, `Capability`, and the
/// inherent `new` and call methods.
pub(crate) fn proxy_impls(gen: &Gen<'_>) -> TokenStream {
    let impls = [clone_impl(gen), debug_impl(gen), serialize_impl(gen), deserialize_impl(gen)];
    let capability = capability_impl(gen);
    let inherent = inherent_impl(gen);
    quote!(#(#impls)* #capability #inherent)
}

/// `Clone`, copying the handle (the object is shared, not copied).
fn clone_impl(gen: &Gen<'_>) -> TokenStream {
    let proxy = &gen.proxy;
    quote! {
        impl ::core::clone::Clone for #proxy {
            fn clone(&self) -> Self {
                #proxy { client: ::core::clone::Clone::clone(&self.client) }
            }
        }
    }
}

/// `Debug`, showing the interface name and the handle.
fn debug_impl(gen: &Gen<'_>) -> TokenStream {
    let (proxy, name) = (&gen.proxy, &gen.iface.name);
    let proxy_name = proxy.to_string();
    quote! {
        impl ::core::fmt::Debug for #proxy {
            fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut __s = ::core::fmt::Formatter::debug_struct(__f, #proxy_name);
                ::core::fmt::DebugStruct::field(&mut __s, "interface", &#name);
                ::core::fmt::DebugStruct::field(&mut __s, "client", &self.client);
                ::core::fmt::DebugStruct::finish(&mut __s)
            }
        }
    }
}

/// `Serialize`, delegating to the handle (which registers the capability
/// with the connection being written to).
fn serialize_impl(gen: &Gen<'_>) -> TokenStream {
    let (proxy, krate) = (&gen.proxy, gen.krate);
    let serde = quote!(#krate::__private::serde);
    quote! {
        impl #serde::Serialize for #proxy {
            fn serialize<__S>(&self, __serializer: __S) -> ::core::result::Result<__S::Ok, __S::Error>
            where
                __S: #serde::Serializer,
            {
                #serde::Serialize::serialize(&self.client, __serializer)
            }
        }
    }
}

/// `Deserialize`, delegating to the handle.
fn deserialize_impl(gen: &Gen<'_>) -> TokenStream {
    let (proxy, krate) = (&gen.proxy, gen.krate);
    let serde = quote!(#krate::__private::serde);
    quote! {
        impl<'de> #serde::Deserialize<'de> for #proxy {
            fn deserialize<__D>(__deserializer: __D) -> ::core::result::Result<Self, __D::Error>
            where
                __D: #serde::Deserializer<'de>,
            {
                ::core::result::Result::map(
                    <#krate::Client as #serde::Deserialize<'de>>::deserialize(__deserializer),
                    <Self as #krate::Capability>::from_client,
                )
            }
        }
    }
}

/// `Capability`: conversion from and to the untyped handle.
fn capability_impl(gen: &Gen<'_>) -> TokenStream {
    let (proxy, krate) = (&gen.proxy, gen.krate);
    quote! {
        impl #krate::Capability for #proxy {
            fn from_client(__client: #krate::Client) -> Self {
                #proxy { client: __client }
            }

            fn client(&self) -> &#krate::Client {
                &self.client
            }
        }
    }
}

/// `impl {Trait}Proxy { fn new(..); fn method(..); .. }`.
fn inherent_impl(gen: &Gen<'_>) -> TokenStream {
    let proxy = &gen.proxy;
    let new = new_fn(gen);
    let liveness = liveness_fns(gen);
    let methods = gen.iface.methods.iter().map(|method| call_fn(gen, method));
    quote! {
        #[allow(clippy::too_many_arguments)]
        impl #proxy {
            #new
            #liveness
            #(#methods)*
        }
    }
}

/// `broken`, a proxy whose calls all fail, and `when_broken`, which
/// resolves once calls can no longer succeed.
fn liveness_fns(gen: &Gen<'_>) -> TokenStream {
    let (vis, krate, name) = (gen.iface.vis, gen.krate, &gen.iface.name);
    let broken_doc = format!(
        " A [`{name}`] capability whose every call fails with `error` (a placeholder \
         for an object that is unavailable). Its `when_broken` resolves at once."
    );
    let when_doc = " Resolves, with the reason, once calls on this capability can no longer \
         succeed: when its connection closes, when the call that promised it fails, at \
         once for a broken proxy; never for a local object, which lives as long as a \
         handle to it (see `Client::when_broken`). The future does not keep the \
         capability alive.";
    quote! {
        #[doc = #broken_doc]
        #vis fn broken(error: #krate::RpcError) -> Self {
            <Self as #krate::Capability>::from_client(#krate::Client::broken(error))
        }

        #[doc = #when_doc]
        #vis fn when_broken(
            &self,
        ) -> impl ::core::future::Future<Output = #krate::RpcError> + ::core::marker::Send + 'static {
            #krate::Client::when_broken(&self.client)
        }
    }
}

/// `new`, which wraps a local object in the dispatcher.
fn new_fn(gen: &Gen<'_>) -> TokenStream {
    let (vis, krate, dispatcher) = (gen.iface.vis, gen.krate, &gen.dispatcher);
    let trait_ident = gen.iface.ident;
    let name = &gen.iface.name;
    // `T` reads best in the docs, unless the trait itself is called `T`.
    let param = if name == "T" { quote!(__T) } else { quote!(T) };
    let doc = format!(
        " Wraps a local object implementing [`{name}`] as a capability.\n\n \
         Calls on the proxy and on its clones, wherever they are sent, run on `object`; \
         they start in the order they were made."
    );
    quote! {
        #[doc = #doc]
        #vis fn new<#param: #trait_ident>(object: #param) -> Self {
            <Self as #krate::Capability>::from_client(
                #krate::Client::from_dispatch(#dispatcher(object)),
            )
        }
    }
}

/// One proxy method: queues the call at once and returns its eventual result.
fn call_fn(gen: &Gen<'_>, method: &Method<'_>) -> TokenStream {
    let (vis, ident) = (gen.iface.vis, method.ident);
    let attrs = call_fn_attrs(gen, method);
    let params = method.args.iter().map(|arg| {
        let (name, ty) = (&arg.name, arg.ty);
        quote!(, #name: #ty)
    });
    let (output, body) = call_fn_output(gen, method);
    quote! {
        #(#attrs)*
        #vis fn #ident(&self #(#params)*) -> #output {
            #body
        }
    }
}

/// The proxy method's attributes: the trait method's docs (or a generated
/// line when it has none), `#[deprecated]` and lint levels.
fn call_fn_attrs(gen: &Gen<'_>, method: &Method<'_>) -> Vec<TokenStream> {
    let kept = method.original.attrs.iter().filter(|attr| is_kept(attr));
    let mut attrs: Vec<TokenStream> = kept.map(|attr| quote!(#attr)).collect();
    if method.docs().next().is_none() {
        let doc = format!(" Calls [`{}::{}`] on the object.", gen.iface.name, method.name());
        attrs.insert(0, quote!(#[doc = #doc]));
    }
    attrs
}

/// Attributes copied from a trait method to its proxy method.
fn is_kept(attr: &Attribute) -> bool {
    ["doc", "deprecated", "allow"].iter().any(|name| attr.path().is_ident(name))
}

/// The proxy method's return type and body, by the shape of the return.
fn call_fn_output(gen: &Gen<'_>, method: &Method<'_>) -> (TokenStream, TokenStream) {
    let krate = gen.krate;
    let id = gen.method_id(method);
    let names = method.args.iter().map(|arg| wire_arg_value(gen, &arg.name, arg.ty));
    let types = method.args.iter().map(|arg| wire_arg_type(gen, arg.ty));
    let rpc_error = quote!(#krate::RpcError);
    let (output, ok, err) = match method.ret {
        Return::Unit => (quote!(#krate::Promise<()>), quote!(()), rpc_error.clone()),
        Return::Value(ty) => (quote!(#krate::Promise<#ty>), checked(ty, Check::Value), rpc_error),
        Return::Result { ok, err } => {
            (quote!(#krate::Promise<#ok, #err>), checked(ok, Check::Value), checked(err, Check::Error))
        }
        Return::Proxy(ty) => (quote!(#ty), checked(ty, Check::Value), rpc_error),
        Return::Sequence { ty, item } => return (quote!(#ty), sequence_call(gen, method, item)),
        Return::Bytes(ty) => return (quote!(#ty), bytes_call(gen, method)),
    };
    let call = quote! {
        #krate::Client::call::<(#(#types,)*), #ok, #err>(&self.client, #id, &(#(#names,)*))
    };
    match method.ret {
        Return::Proxy(ty) => (output, pipelined(gen, ty, call)),
        _ => (output, call),
    }
}

/// Makes a pair, sends the writer with the call as a last argument, and
/// returns the reader at once (holding the call until the reader goes).
fn sequence_call(gen: &Gen<'_>, method: &Method<'_>, item: &Type) -> TokenStream {
    let krate = gen.krate;
    let id = gen.method_id(method);
    let names = method.args.iter().map(|arg| wire_arg_value(gen, &arg.name, arg.ty));
    let types = method.args.iter().map(|arg| wire_arg_type(gen, arg.ty));
    let item = checked(item, Check::Value);
    let local = |name| Ident::new(name, proc_macro2::Span::mixed_site());
    let (writer, reader, promise) = (local("__writer"), local("__reader"), local("__promise"));
    quote! {
        let (#writer, #reader) = #krate::Sequence::<#item>::channel();
        let #promise = #krate::Client::call::<(#(#types,)* #krate::SequenceWriter<#item>,), (), #krate::RpcError>(
            &self.client, #id, &(#(#names,)* #writer,),
        );
        #krate::__private::sequence_result(#reader, #promise)
    }
}

/// As [`sequence_call`], for a byte stream.
fn bytes_call(gen: &Gen<'_>, method: &Method<'_>) -> TokenStream {
    let krate = gen.krate;
    let id = gen.method_id(method);
    let names = method.args.iter().map(|arg| wire_arg_value(gen, &arg.name, arg.ty));
    let types = method.args.iter().map(|arg| wire_arg_type(gen, arg.ty));
    let local = |name| Ident::new(name, proc_macro2::Span::mixed_site());
    let (writer, reader, promise) = (local("__writer"), local("__reader"), local("__promise"));
    quote! {
        let (#writer, #reader) = #krate::Bytes::channel();
        let #promise = #krate::Client::call::<(#(#types,)* #krate::BytesWriter,), (), #krate::RpcError>(
            &self.client, #id, &(#(#names,)* #writer,),
        );
        #krate::__private::bytes_result(#reader, #promise)
    }
}

/// `Promise::pipeline(&call)`, with the path and argument spanning the
/// user's return type, so a `...Proxy` type that is no capability is
/// reported there.
fn pipelined(gen: &Gen<'_>, ty: &Type, call: TokenStream) -> TokenStream {
    let krate = gen.krate;
    let (first, last) = first_and_last_span(ty);
    let path = respanned(quote!(#krate::Promise::), first);
    let pipeline = Ident::new("pipeline", last);
    let promise = Ident::new("__promise", last);
    let and = quote_spanned!(first=> &);
    let args = parens_at(quote!(#and #promise), last);
    quote! {
        let #promise = #call;
        #path #pipeline #args
    }
}
