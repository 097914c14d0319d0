//! The expansion is valid Rust and contains what it should.

use proc_macro2::TokenStream;
use quote::quote;

/// Expands `item` with `attr` and returns it as normalized token text.
fn expand(attr: TokenStream, item: TokenStream) -> String {
    let expanded = crate::expand(attr, item);
    syn::parse2::<syn::File>(expanded.clone()).expect("the expansion parses as a file");
    expanded.to_string()
}

/// Normalizes a snippet the way `expand`'s output is printed.
fn text(tokens: TokenStream) -> String {
    tokens.to_string()
}

fn game() -> TokenStream {
    quote! {
        /// A game.
        pub trait Game {
            /// Joins the game.
            async fn join(&self, name: String) -> Result<PlayerProxy, GameError>;
            fn ping(&self, x: u32, (a, b): (u8, u8)) -> u32;
            async fn notify(&self, _: String);
            fn player(&self) -> PlayerProxy;
        }
    }
}

#[test]
fn rewrites_the_trait() {
    let out = expand(quote!(), game());
    let header = "pub trait Game : :: core :: marker :: Send + :: core :: marker :: Sync + 'static";
    assert!(out.contains(header), "{out}");
    assert!(
        out.contains(&text(quote! {
            fn join(&self, name: String)
                -> impl ::core::future::Future<Output = Result<PlayerProxy, GameError> > + ::core::marker::Send;
        })),
        "{out}"
    );
    assert!(out.contains(&text(quote!(
        fn ping(&self, x: u32, __arg1: (u8, u8)) -> u32;
    ))));
    assert!(
        out.contains(&text(quote! {
            fn notify(&self, _: String) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send;
        })),
        "{out}"
    );
    assert!(out.contains(&text(quote!(#[doc = r" Joins the game."]))));
    assert!(!out.contains("async fn"), "{out}");
}

#[test]
fn generates_the_proxy() {
    let out = expand(quote!(), game());
    assert!(out.contains(&text(quote!(
        pub struct GameProxy {
            client: ::rpc_core::Client,
        }
    ))));
    assert!(
        out.contains(&text(quote! {
            pub fn join(&self, name: String) -> ::rpc_core::Promise<PlayerProxy, GameError> {
                ::rpc_core::Client::call::<
                    (<::core::marker::PhantomData<String> as __Transferable>::T,),
                    <::core::marker::PhantomData<PlayerProxy> as __Transferable>::T,
                    <::core::marker::PhantomData<GameError> as __TransferableError>::T
                >(
                    &self.client,
                    ::rpc_core::__private::MethodId { interface: __EVENTUAL_INTERFACE, index: 0u16 },
                    &(name,)
                )
            }
        })),
        "{out}"
    );
    assert!(out.contains(&text(quote!(pub fn ping(&self, x: u32, __arg1: (u8, u8)) -> ::rpc_core::Promise<u32>))));
    assert!(out.contains(&text(quote!(&(x, __arg1,)))));
    assert!(
        out.contains(&text(quote! {
            pub fn player(&self) -> PlayerProxy {
                let __promise = ::rpc_core::Client::call::<
                    (),
                    <::core::marker::PhantomData<PlayerProxy> as __Transferable>::T,
                    ::rpc_core::RpcError
                >(
                    &self.client,
                    ::rpc_core::__private::MethodId { interface: __EVENTUAL_INTERFACE, index: 3u16 },
                    &()
                );
                ::rpc_core::Promise::pipeline(&__promise)
            }
        })),
        "{out}"
    );
    assert!(out.contains(&text(quote!(pub fn new<T: Game>(object: T) -> Self))));
    for imp in [
        "impl :: core :: clone :: Clone for GameProxy",
        "impl :: core :: fmt :: Debug for GameProxy",
        "impl :: rpc_core :: Capability for GameProxy",
        "impl :: rpc_core :: __private :: serde :: Serialize for GameProxy",
        "impl < 'de > :: rpc_core :: __private :: serde :: Deserialize < 'de > for GameProxy",
    ] {
        assert!(out.contains(imp), "missing {imp}");
    }
}

#[test]
fn a_trait_named_t_gets_another_parameter_name_in_new() {
    let out = expand(
        quote!(),
        quote!(
            trait T {
                fn f(&self);
            }
        ),
    );
    assert!(out.contains(&text(quote!(fn new<__T: T>(object: __T) -> Self))), "{out}");
}

#[test]
fn proxy_methods_without_docs_get_one() {
    let out = expand(quote!(), game());
    assert!(out.contains(&text(quote!(#[doc = " Calls [`Game::ping`] on the object."]))), "{out}");
}

#[test]
fn generates_the_interface_info() {
    let out = expand(quote!(), game());
    assert!(
        out.contains(&text(quote! {
            id: ::rpc_core::__private::interface_id("Game"),
            name: "Game",
            methods: &["join", "ping", "notify", "player"],
        })),
        "{out}"
    );
    let out = expand(quote!(id = 0x2a, crate = my::rt), game());
    assert!(out.contains("id : 42u64"), "{out}");
    assert!(out.contains("my :: rt :: Client"), "{out}");
    assert!(!out.contains("rpc_core"), "{out}");
}

#[test]
fn generates_the_stub() {
    let out = expand(quote!(), game());
    assert!(
        out.contains(&text(quote! {
            impl<__T: Game> ::rpc_core::__private::Dispatch for __GameDispatch<__T>
        })),
        "{out}"
    );
    assert!(
        out.contains(&text(quote! {
            ::rpc_core::__private::IncomingCall::args::<(
                <::core::marker::PhantomData<String> as __Transferable>::T,
            )>(&__call)
        })),
        "{out}"
    );
    assert!(
        out.contains(&text(quote! {
            (<__T as Game>::join(&self.0, __arg0).await)
        })),
        "{out}"
    );
    assert!(
        out.contains(&text(quote! {
            ::rpc_core::__private::reply_value::< <::core::marker::PhantomData<u32> as __Transferable>::T>(
                <__T as Game>::ping(&self.0, __arg0, __arg1)
            )
        })),
        "{out}"
    );
    assert!(
        out.contains(&text(quote! {
            <__T as Game>::notify(&self.0, __arg0).await;
            ::rpc_core::__private::reply_value(())
        })),
        "{out}"
    );
    assert!(out.contains(&text(quote! {
        _ => ::rpc_core::__private::unimplemented(__EVENTUAL_INTERFACE, &__call),
    })));
}

#[test]
fn checks_the_types_where_they_meet_the_runtime() {
    let out = expand(quote!(), game());
    for check in [
        quote!(
            trait __Transferable {
                type T;
            }
        ),
        quote!(
            trait __TransferableError {
                type T;
            }
        ),
        quote!(+ 'static + ::core::fmt::Debug),
        quote! {
            reply_result::<
                <::core::marker::PhantomData<PlayerProxy> as __Transferable>::T,
                <::core::marker::PhantomData<GameError> as __TransferableError>::T
            >
        },
    ] {
        assert!(out.contains(&text(check.clone())), "missing {check}");
    }
}

#[test]
fn falls_back_to_the_unchanged_trait_with_every_error() {
    let item = quote!(
        pub trait Game {
            fn a(&mut self);
            fn b<T>(&self);
        }
    );
    let out = crate::expand(quote!(bogus), item.clone()).to_string();
    assert!(out.starts_with(&item.to_string()), "{out}");
    assert_eq!(out.matches("compile_error").count(), 3, "{out}");
    assert!(!out.contains("GameProxy"));
}

#[test]
fn rejects_items_that_are_not_traits() {
    let out = crate::expand(
        quote!(),
        quote!(
            struct S;
        ),
    )
    .to_string();
    assert!(out.contains("can only be applied to a trait"), "{out}");
    assert!(out.starts_with("struct S ;"), "{out}");
}

/// Prints the expansion of the `Game` example, formatted, when run with
/// `cargo test -p rpc-codegen -- --ignored --nocapture print_expansion`.
#[test]
#[ignore = "prints the expansion for reading"]
fn print_expansion() {
    println!("{}", crate::expand(quote!(), game()));
}

#[test]
fn a_sequence_return_is_handed_back_at_once_with_the_writer_sent_along() {
    let out = expand(
        quote!(),
        quote! {
            pub trait Feed {
                fn events(&self, room: u32) -> Sequence<Event>;
            }
        },
    );
    // The proxy returns the sequence itself, not a promise of it ...
    assert!(out.contains(&text(quote!(pub fn events(&self, room: u32) -> Sequence<Event>))), "{out}");
    assert!(out.contains(":: rpc_core :: Sequence :: <"), "{out}");
    assert!(out.contains(":: channel ()"), "{out}");
    assert!(out.contains("__private :: sequence_result"), "{out}");
    // ... and the stub decodes the writer as a last argument and splices into it.
    assert!(out.contains(":: rpc_core :: SequenceWriter <"), "{out}");
    assert!(out.contains("let (__arg0 , __writer ,)"), "{out}");
    assert!(out.contains("__private :: splice"), "{out}");
    // A panic before the handler returns ends the writer with the panic's error.
    assert!(out.contains("__private :: catch_panic"), "{out}");
    assert!(out.contains("__private :: fail_sequence (__writer"), "{out}");
}

#[test]
fn only_a_vec_of_u8_travels_as_a_byte_vec() {
    let yes = [quote!(Vec<u8>), quote!(std::vec::Vec<u8>), quote!(::std::vec::Vec<u8>), quote!(alloc::vec::Vec<u8>)];
    for ty in yes {
        assert!(super::is_byte_vec(&syn::parse2(ty.clone()).unwrap()), "{ty}");
    }
    let no = [
        quote!(Vec<u16>),
        quote!(Vec<Vec<u8>>),
        quote!(my::Vec<u8>),
        quote!(::Vec<u8>),
        quote!(Vec<u8, A>),
        quote!(Vec),
        quote!(bytes::Bytes),
        quote!(Box<[u8]>),
        quote!(<T as Tr>::Vec<u8>),
    ];
    for ty in no {
        assert!(!super::is_byte_vec(&syn::parse2(ty.clone()).unwrap()), "{ty}");
    }
}

#[test]
fn a_vec_u8_argument_and_result_go_as_byte_vecs() {
    let out = expand(
        quote!(),
        quote! {
            pub trait Echo {
                async fn echo(&self, tag: u32, data: Vec<u8>) -> Vec<u8>;
                fn checked(&self, data: Vec<u8>) -> Result<Vec<u8>, String>;
            }
        },
    );
    // The proxy wraps the argument, the stub decodes the wrapper and unwraps it.
    assert!(out.contains(&text(quote!(::rpc_core::__private::ByteVec(data)))), "{out}");
    assert!(out.contains(&text(quote!(let __arg1 = __arg1.0;))), "{out}");
    // Results are encoded through it.
    assert!(
        out.contains(&text(quote!(::rpc_core::__private::reply_value(::rpc_core::__private::ByteVec(
            <__T as Echo>::echo(&self.0, __arg0, __arg1).await
        ))))),
        "{out}"
    );
    assert!(out.contains(&text(quote!(::core::result::Result::map))), "{out}");
}
