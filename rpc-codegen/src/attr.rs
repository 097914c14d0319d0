//! The arguments of the attribute itself: `#[eventual(id = 0x...u64, crate = path)]`.
//!
//! Both are optional. `id` fixes the interface id on the wire (by default it
//! is derived from the trait name, so renaming a trait changes its id);
//! `crate` names the runtime crate for code that renames or re-exports
//! `rpc_core`.

use proc_macro2::{Literal, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitInt, Meta, MetaNameValue, Token};

use crate::ctxt::Ctxt;

/// The parsed attribute arguments, with defaults filled in.
pub(crate) struct Args {
    /// The interface id given with `id = ...`, as a `u64`-suffixed literal.
    pub(crate) id: Option<Literal>,
    /// Path of the runtime crate (`::rpc_core` unless `crate = ...` is given).
    pub(crate) krate: syn::Path,
}

impl Args {
    /// Parses the attribute's token stream, recording every problem in `cx`
    /// and falling back to defaults for the arguments that were wrong.
    pub(crate) fn parse(cx: &Ctxt, attr: TokenStream) -> Args {
        let mut args = Args { id: None, krate: syn::parse_quote!(::rpc_core) };
        let parser = Punctuated::<Meta, Token![,]>::parse_terminated;
        match parser.parse2(attr) {
            Ok(metas) => {
                let mut seen = Vec::new();
                for meta in &metas {
                    args.parse_one(cx, meta, &mut seen);
                }
            }
            Err(err) => cx.syn_error(err),
        }
        args
    }

    /// Handles one `name = value` argument.
    fn parse_one(&mut self, cx: &Ctxt, meta: &Meta, seen: &mut Vec<String>) {
        let path = meta.path();
        let name = path.get_ident().map(ToString::to_string).unwrap_or_default();
        if name != "id" && name != "crate" {
            let shown = quote::quote!(#path).to_string().replace(' ', "");
            let msg = format!("unknown #[eventual] argument `{shown}`; expected `id = 0x...u64` or `crate = path`");
            return cx.error_spanned_by(path, msg);
        }
        if seen.contains(&name) {
            return cx.error_spanned_by(path, format!("duplicate #[eventual] argument `{name}`"));
        }
        seen.push(name.clone());
        let Meta::NameValue(MetaNameValue { value, .. }) = meta else {
            let example = if name == "id" { "id = 0x...u64" } else { "crate = path" };
            return cx.error_spanned_by(meta, format!("expected `{example}`"));
        };
        if name == "id" {
            self.id = parse_id(cx, value);
        } else if let Some(krate) = parse_crate(cx, value) {
            self.krate = krate;
        }
    }
}

/// Reads `id = <integer literal>`: it must fit in a `u64` and carry no
/// suffix other than `u64`.
fn parse_id(cx: &Ctxt, value: &Expr) -> Option<Literal> {
    let Expr::Lit(ExprLit { lit: Lit::Int(lit), .. }) = value else {
        cx.error_spanned_by(value, "expected an integer literal, like `id = 0x5eed_u64`");
        return None;
    };
    if !matches!(lit.suffix(), "" | "u64") {
        let msg = format!("the interface id is a u64; found suffix `{}`", lit.suffix());
        cx.error_spanned_by(lit, msg);
        return None;
    }
    match lit.base10_parse::<u64>() {
        Ok(id) => Some(spanned_u64(id, lit)),
        Err(err) => {
            cx.syn_error(syn::Error::new(lit.span(), format!("invalid interface id: {err}")));
            None
        }
    }
}

/// A `u64`-suffixed literal carrying the span of the user's literal.
fn spanned_u64(id: u64, original: &LitInt) -> Literal {
    let mut lit = Literal::u64_suffixed(id);
    lit.set_span(original.span());
    lit
}

/// Reads `crate = path`.
fn parse_crate(cx: &Ctxt, value: &Expr) -> Option<syn::Path> {
    match value {
        Expr::Path(expr) if expr.qself.is_none() && expr.attrs.is_empty() => Some(expr.path.clone()),
        _ => {
            cx.error_spanned_by(value, "expected a path, like `crate = ::rpc_core`");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Args;
    use crate::ctxt::Ctxt;
    use proc_macro2::TokenStream;
    use quote::{quote, ToTokens};

    fn parse(attr: TokenStream) -> (Option<String>, String, Vec<String>) {
        let cx = Ctxt::new();
        let args = Args::parse(&cx, attr);
        let errors = match cx.check() {
            Ok(()) => Vec::new(),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        };
        let id = args.id.map(|lit| lit.to_string());
        (id, args.krate.to_token_stream().to_string(), errors)
    }

    #[test]
    fn defaults_when_empty() {
        let (id, krate, errors) = parse(quote!());
        assert_eq!(id, None);
        assert_eq!(krate, ":: rpc_core");
        assert!(errors.is_empty());
    }

    #[test]
    fn reads_id_and_crate() {
        let (id, krate, errors) = parse(quote!(id = 0x10u64, crate = my::rt));
        assert_eq!(id.as_deref(), Some("16u64"));
        assert_eq!(krate, "my :: rt");
        assert!(errors.is_empty());
    }

    #[test]
    fn accepts_unsuffixed_id_and_crate_keyword_path() {
        let (id, krate, errors) = parse(quote!(id = 7, crate = crate::rt,));
        assert_eq!(id.as_deref(), Some("7u64"));
        assert_eq!(krate, "crate :: rt");
        assert!(errors.is_empty());
    }

    #[test]
    fn reports_every_bad_argument() {
        let (_, _, errors) = parse(quote!(name = "x", id = 1u32, id = 2, crate = "rpc", version));
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].contains("unknown #[eventual] argument `name`"));
        assert!(errors[1].contains("found suffix `u32`"));
        assert!(errors[2].contains("duplicate #[eventual] argument `id`"));
        assert!(errors[3].contains("expected a path"));
        assert!(errors[4].contains("unknown #[eventual] argument `version`"));
    }

    #[test]
    fn rejects_out_of_range_and_non_literal_ids() {
        let (_, _, errors) = parse(quote!(id = 0x1_0000_0000_0000_0000));
        assert!(errors[0].contains("invalid interface id"), "{errors:?}");
        let (_, _, errors) = parse(quote!(id = -1));
        assert!(errors[0].contains("invalid interface id"), "{errors:?}");
        let (_, _, errors) = parse(quote!(id = GAME_ID));
        assert!(errors[0].contains("expected an integer literal"), "{errors:?}");
        let (_, _, errors) = parse(quote!(id));
        assert!(errors[0].contains("expected `id = 0x...u64`"), "{errors:?}");
    }

    #[test]
    fn reports_syntax_errors() {
        let (_, _, errors) = parse(quote!(id = = 3));
        assert_eq!(errors.len(), 1);
    }
}
