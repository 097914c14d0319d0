//! A model of the user's trait that keeps every original token and span.
//!
//! Building the model never fails: anything the model cannot represent is
//! left for [`crate::check`] to report, which reads the `original` syntax
//! kept on every node. Expansion only runs on a model that passed the checks.

use std::collections::HashSet;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, PatType, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type, Visibility,
};

/// An `#[eventual]` trait.
pub(crate) struct Interface<'a> {
    /// The trait as the user wrote it.
    pub(crate) original: &'a ItemTrait,
    /// The trait's name.
    pub(crate) ident: &'a Ident,
    /// The trait's name without any `r#`, as it travels in `InterfaceInfo`.
    pub(crate) name: String,
    /// The trait's visibility, given to the generated proxy.
    pub(crate) vis: &'a Visibility,
    /// The trait's methods in declaration order (other items are skipped).
    pub(crate) methods: Vec<Method<'a>>,
}

/// One method of the trait.
pub(crate) struct Method<'a> {
    /// The method as the user wrote it.
    pub(crate) original: &'a TraitItemFn,
    /// The method's name.
    pub(crate) ident: &'a Ident,
    /// Declaration index among the methods: the method id on the wire.
    pub(crate) index: usize,
    /// Whether it is an `async fn`.
    pub(crate) is_async: bool,
    /// The arguments after the receiver.
    pub(crate) args: Vec<Arg<'a>>,
    /// What the method returns.
    pub(crate) ret: Return<'a>,
}

/// One argument of a method.
pub(crate) struct Arg<'a> {
    /// The argument as the user wrote it (`pattern: Type`).
    pub(crate) original: &'a PatType,
    /// The name generated code uses: the user's identifier, or a generated
    /// one when the pattern is not a plain identifier (`_`, tuples, ...).
    pub(crate) name: Ident,
    /// The argument's type.
    pub(crate) ty: &'a Type,
}

/// The shape of a method's return type, which decides the proxy's return.
pub(crate) enum Return<'a> {
    /// No return type: the proxy returns `Promise<()>`.
    Unit,
    /// `Result<T, E>`: the proxy returns `Promise<T, E>`. With `T` a stream
    /// (`Result<Sequence<U>, E>`, `Result<Bytes, E>`) the stream's end travels
    /// in the reply, like any value, so the typed error comes before any item
    /// and the items follow the reply.
    Result {
        /// `T`.
        ok: &'a Type,
        /// `E`.
        err: &'a Type,
    },
    /// A type named `...Proxy`: the proxy returns it at once, pipelined.
    Proxy(&'a Type),
    /// `Sequence<T>`: the proxy returns the sequence at once; the caller
    /// sends the writer with the call, so items flow before the reply.
    Sequence {
        /// The whole `Sequence<T>` type.
        ty: &'a Type,
        /// `T`.
        item: &'a Type,
    },
    /// `Bytes` (or `rpc_core::Bytes`; not `bytes::Bytes`, a chunk): returned
    /// at once like a sequence.
    Bytes(&'a Type),
    /// Any other `T`: the proxy returns `Promise<T>`.
    Value(&'a Type),
}

impl<'a> Interface<'a> {
    /// Builds the model of `item`; methods are numbered in declaration order.
    pub(crate) fn from_syn(item: &'a ItemTrait) -> Self {
        let methods = item
            .items
            .iter()
            .filter_map(|item| match item {
                TraitItem::Fn(method) => Some(method),
                _ => None,
            })
            .enumerate()
            .map(|(index, method)| Method::from_syn(index, method))
            .collect();
        Interface { original: item, ident: &item.ident, name: item.ident.unraw().to_string(), vis: &item.vis, methods }
    }
}

impl<'a> Method<'a> {
    /// Builds the model of one trait method.
    fn from_syn(index: usize, method: &'a TraitItemFn) -> Self {
        let typed: Vec<&PatType> = method
            .sig
            .inputs
            .iter()
            .filter_map(|arg| match arg {
                FnArg::Typed(arg) => Some(arg),
                FnArg::Receiver(_) => None,
            })
            .collect();
        Method {
            original: method,
            ident: &method.sig.ident,
            index,
            is_async: method.sig.asyncness.is_some(),
            args: Arg::name_all(&typed),
            ret: Return::from_syn(&method.sig.output),
        }
    }

    /// The method's name without any `r#`, as it travels in `InterfaceInfo`.
    pub(crate) fn name(&self) -> String {
        self.ident.unraw().to_string()
    }

    /// The method id on the wire: its index as a `u16`.
    ///
    /// # Panics
    ///
    /// If the trait has more methods than ids, which [`crate::check`]
    /// rejects before any code is generated.
    pub(crate) fn id(&self) -> u16 {
        u16::try_from(self.index).expect("method count is checked before expansion")
    }

    /// The method's doc comments (`#[doc = ...]` attributes).
    pub(crate) fn docs(&self) -> impl Iterator<Item = &'a Attribute> {
        self.original.attrs.iter().filter(|attr| attr.path().is_ident("doc"))
    }
}

impl<'a> Arg<'a> {
    /// Names every argument: plain identifiers keep their name, other
    /// patterns get `__argN`, made unique against the user's names.
    fn name_all(args: &[&'a PatType]) -> Vec<Self> {
        let taken: HashSet<String> =
            args.iter().filter_map(|arg| plain_ident(&arg.pat)).map(|i| i.to_string()).collect();
        args.iter()
            .enumerate()
            .map(|(i, arg)| Arg {
                original: arg,
                name: plain_ident(&arg.pat).cloned().unwrap_or_else(|| generated(i, &taken)),
                ty: &arg.ty,
            })
            .collect()
    }
}

/// The identifier of an `ident`, `mut ident` or `ref ident` pattern.
pub(crate) fn plain_ident(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(pat) if pat.subpat.is_none() => Some(&pat.ident),
        _ => None,
    }
}

/// `__argN`, with underscores appended until no user argument has the name.
fn generated(index: usize, taken: &HashSet<String>) -> Ident {
    let mut name = format!("__arg{index}");
    while taken.contains(&name) {
        name.push('_');
    }
    Ident::new(&name, Span::call_site())
}

impl<'a> Return<'a> {
    /// Classifies a method's return type.
    fn from_syn(output: &'a ReturnType) -> Self {
        let ReturnType::Type(_, ty) = output else {
            return Return::Unit;
        };
        if let Some((ok, err)) = result_args(ty) {
            Return::Result { ok, err }
        } else if let Some(item) = sequence_arg(ty) {
            Return::Sequence { ty, item }
        } else if is_byte_stream(ty) {
            Return::Bytes(ty)
        } else if is_proxy(ty) {
            Return::Proxy(ty)
        } else {
            Return::Value(ty)
        }
    }
}

/// The last segment of a type's path, if the type is a plain path.
fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

/// `Bytes` or `…rpc_core::Bytes`: our byte stream, not the `bytes` crate's chunk.
fn is_byte_stream(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let names: Vec<String> = path.path.segments.iter().map(|s| s.ident.to_string()).collect();
    matches!(names.iter().map(String::as_str).collect::<Vec<_>>()[..], ["Bytes"] | [.., "rpc_core", "Bytes"])
}

/// `T` of a type whose last segment is `Sequence<T>`.
fn sequence_arg(ty: &Type) -> Option<&Type> {
    let segment = last_segment(ty).filter(|segment| segment.ident == "Sequence")?;
    let PathArguments::AngleBracketed(generics) = &segment.arguments else {
        return None;
    };
    match generics.args.iter().collect::<Vec<_>>()[..] {
        [syn::GenericArgument::Type(item)] => Some(item),
        _ => None,
    }
}

/// `T` and `E` of a type whose last segment is `Result<T, E>`.
fn result_args(ty: &Type) -> Option<(&Type, &Type)> {
    let segment = last_segment(ty).filter(|segment| segment.ident == "Result")?;
    let PathArguments::AngleBracketed(generics) = &segment.arguments else {
        return None;
    };
    let mut types = generics.args.iter().map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(Some(ok)), Some(Some(err)), None) => Some((ok, err)),
        _ => None,
    }
}

/// Whether a type is named like a generated capability (`GameProxy`).
fn is_proxy(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|segment| {
        let name = segment.ident.unraw().to_string();
        name.len() > "Proxy".len() && name.ends_with("Proxy") && segment.arguments.is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::{Interface, Return};
    use quote::ToTokens;
    use syn::ItemTrait;

    fn game() -> ItemTrait {
        syn::parse_quote! {
            /// A game.
            pub trait Game {
                /// Joins.
                async fn join(&self, name: String) -> Result<PlayerProxy, GameError>;
                fn ping(&self, x: u32, _: u32, (a, b): (u8, u8)) -> u32;
                async fn notify(&self, text: String);
                fn player(&self) -> PlayerProxy;
                fn io(&self) -> std::io::Result<u8>;
                fn r#type(&self, __arg1: u8, _: u8) -> ::core::result::Result<(), E>;
                fn feed(&self) -> Sequence<Tick>;
                fn replay(&self) -> Bytes;
                fn chunk(&self) -> bytes::Bytes;
            }
        }
    }

    fn tokens<T: ToTokens>(t: T) -> String {
        t.into_token_stream().to_string()
    }

    #[test]
    fn models_the_trait() {
        let item = game();
        let iface = Interface::from_syn(&item);
        assert_eq!(iface.name, "Game");
        let names: Vec<String> = iface.methods.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["join", "ping", "notify", "player", "io", "type", "feed", "replay", "chunk"]);
        let asyncs: Vec<bool> = iface.methods.iter().map(|m| m.is_async).collect();
        assert_eq!(asyncs, [true, false, true, false, false, false, false, false, false]);
        assert_eq!(iface.methods[0].docs().count(), 1);
        assert_eq!(iface.methods[5].index, 5);
    }

    #[test]
    fn names_arguments() {
        let item = game();
        let iface = Interface::from_syn(&item);
        let names = |i: usize| -> Vec<String> { iface.methods[i].args.iter().map(|a| a.name.to_string()).collect() };
        assert_eq!(names(1), ["x", "__arg1", "__arg2"]);
        assert_eq!(names(5), ["__arg1", "__arg1_"]);
        assert_eq!(tokens(iface.methods[1].args[2].ty), "(u8 , u8)");
    }

    #[test]
    fn classifies_returns() {
        let item = game();
        let iface = Interface::from_syn(&item);
        let kinds: Vec<String> = iface
            .methods
            .iter()
            .map(|m| match &m.ret {
                Return::Unit => "unit".to_string(),
                Return::Result { ok, err } => format!("result {} {}", tokens(ok), tokens(err)),
                Return::Proxy(ty) => format!("proxy {}", tokens(ty)),
                Return::Sequence { item, .. } => format!("sequence {}", tokens(item)),
                Return::Bytes(_) => "bytes".to_string(),
                Return::Value(ty) => format!("value {}", tokens(ty)),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "result PlayerProxy GameError",
                "value u32",
                "unit",
                "proxy PlayerProxy",
                "value std :: io :: Result < u8 >",
                "result () E",
                "sequence Tick",
                "bytes",
                "value bytes :: Bytes",
            ]
        );
    }

    #[test]
    fn a_type_named_just_proxy_is_a_value() {
        let item: ItemTrait = syn::parse_quote!(
            trait T {
                fn f(&self) -> Proxy;
            }
        );
        let iface = Interface::from_syn(&item);
        assert!(matches!(iface.methods[0].ret, Return::Value(_)));
    }

    #[test]
    fn a_stream_behind_a_result_is_a_result_carrying_the_stream() {
        let item: ItemTrait = syn::parse_quote!(
            trait Files {
                fn lines(&self) -> Result<Sequence<String>, FsError>;
                fn contents(&self) -> Result<rpc_core::Bytes, FsError>;
            }
        );
        let iface = Interface::from_syn(&item);
        let oks: Vec<String> = iface
            .methods
            .iter()
            .map(|m| match &m.ret {
                Return::Result { ok, .. } => tokens(ok),
                _ => "not a result".to_string(),
            })
            .collect();
        assert_eq!(oks, ["Sequence < String >", "rpc_core :: Bytes"]);
    }
}
