//! Each misuse produces its error; a valid trait produces none.

use syn::ItemTrait;

use super::{check, MAX_METHODS};
use crate::ast::Interface;
use crate::ctxt::Ctxt;

/// The messages `check` reports for `item`, in order.
fn errors(item: ItemTrait) -> Vec<String> {
    let cx = Ctxt::new();
    check(&cx, &Interface::from_syn(&item));
    match cx.check() {
        Ok(()) => Vec::new(),
        Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts exactly one error, containing `needle`.
fn assert_one(item: ItemTrait, needle: &str) {
    let errors = errors(item);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(needle), "{:?} does not contain {needle:?}", errors[0]);
}

#[test]
fn accepts_a_valid_trait() {
    let item = syn::parse_quote! {
        /// Docs.
        pub trait Game: Clone {
            async fn join(&self, name: String) -> Result<PlayerProxy, GameError>;
            #[allow(clippy::too_many_arguments)]
            fn ping(&self, x: u32, _: u32, (a, b): (u8, u8)) -> u32;
            async fn notify(&self, text: std::borrow::Cow<'static, str>);
            fn player(&self) -> PlayerProxy;
        }
    };
    assert_eq!(errors(item), Vec::<String>::new());
}

#[test]
fn rejects_bad_receivers() {
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(&mut self);
            }
        ),
        "not `&mut self`",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(self);
            }
        ),
        "not `self`",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(mut self);
            }
        ),
        "not `self`",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(x: u8);
            }
        ),
        "has no receiver",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(self: Box<Self>);
            }
        ),
        "typed receivers",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(&'static self);
            }
        ),
        "elided lifetime",
    );
}

#[test]
fn rejects_generics() {
    assert_one(
        syn::parse_quote!(
            trait T<A> {
                fn f(&self);
            }
        ),
        "generic traits",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f<A>(&self, a: A);
            }
        ),
        "generic methods",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f<const N: usize>(&self);
            }
        ),
        "generic methods",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f<'a>(&self);
            }
        ),
        "lifetime parameters",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f<'a, A>(&self);
            }
        ),
        "generic methods",
    );
    assert_one(
        syn::parse_quote!(
            trait T where
                Self: Sized,
            {
                fn f(&self);
            }
        ),
        "`where`",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(&self)
                where
                    Self: Sized;
            }
        ),
        "`where`",
    );
}

#[test]
fn rejects_qualifiers() {
    assert_one(
        syn::parse_quote!(
            unsafe trait T {
                fn f(&self);
            }
        ),
        "cannot be `unsafe`",
    );
    assert_one(syn::parse_quote!(auto trait T {}), "auto traits");
    assert_one(
        syn::parse_quote!(
            trait T {
                unsafe fn f(&self);
            }
        ),
        "`unsafe fn`",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                extern "C" fn f(&self);
            }
        ),
        "`extern`",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                const fn f(&self);
            }
        ),
        "`const fn`",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(&self, ...);
            }
        ),
        "variadic",
    );
}

#[test]
fn rejects_other_items_and_bodies() {
    assert_one(
        syn::parse_quote!(
            trait T {
                type A;
            }
        ),
        "associated types",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                const A: u8;
            }
        ),
        "associated constants",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                m!();
            }
        ),
        "macro invocations",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(&self) {}
            }
        ),
        "default method bodies",
    );
    assert_one(
        syn::parse_quote!(
            trait T {
                #[cfg(test)]
                fn f(&self);
            }
        ),
        "#[cfg]",
    );
}

#[test]
fn rejects_types_that_cannot_travel() {
    let cases: Vec<(ItemTrait, &str)> = vec![
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, s: &str);
                }
            ),
            "references",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, s: Vec<&'static str>);
                }
            ),
            "references",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, s: impl Clone);
                }
            ),
            "`impl Trait`",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self) -> impl Clone;
                }
            ),
            "`impl Trait`",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, s: Box<dyn Send>);
                }
            ),
            "`dyn Trait`",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, p: *const u8);
                }
            ),
            "raw pointers",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, p: fn(u8));
                }
            ),
            "function pointers",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, p: Vec<_>);
                }
            ),
            "written out",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self) -> Result<Self, E>;
                }
            ),
            "`Self`",
        ),
        (
            syn::parse_quote!(
                trait T {
                    fn f(&self, c: Cow<'a, str>);
                }
            ),
            "borrowed data",
        ),
    ];
    for (item, needle) in cases {
        assert_one(item, needle);
    }
}

#[test]
fn rejects_reserved_and_duplicate_names() {
    for name in ["new", "client", "from_client", "clone", "fmt", "serialize", "deserialize"] {
        let ident = syn::Ident::new(name, proc_macro2::Span::call_site());
        assert_one(syn::parse_quote!(trait Game { fn #ident(&self); }), "clashes");
    }
    assert_one(
        syn::parse_quote!(
            trait T {
                fn f(&self);
                fn f(&self, x: u8);
            }
        ),
        "duplicate",
    );
}

#[test]
fn rejects_too_many_arguments() {
    let ok: ItemTrait = syn::parse_quote! {
        trait T { fn f(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8,
                       i: u8, j: u8, k: u8, l: u8, m: u8, n: u8, o: u8, p: u8); }
    };
    assert!(errors(ok).is_empty());
    let too_many: ItemTrait = syn::parse_quote! {
        trait T { fn f(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8,
                       i: u8, j: u8, k: u8, l: u8, m: u8, n: u8, o: u8, p: u8, q: u8); }
    };
    assert_one(too_many, "too many arguments");
}

#[test]
fn rejects_too_many_methods() {
    let mut item: ItemTrait = syn::parse_quote!(
        trait T {}
    );
    for i in 0..MAX_METHODS {
        let ident = quote::format_ident!("m{i}");
        item.items.push(syn::parse_quote!(fn #ident(&self);));
    }
    assert!(errors(item.clone()).is_empty());
    item.items.push(syn::parse_quote!(
        fn one_too_many(&self);
    ));
    assert_one(item, "too many methods");
}

#[test]
fn reports_every_error_of_a_trait() {
    let item = syn::parse_quote! {
        unsafe trait T<A> {
            type X;
            fn a(&mut self);
            fn new(&self, s: &str) -> impl Clone;
            fn b<B>(self) {}
        }
    };
    assert_eq!(errors(item).len(), 10);
}
