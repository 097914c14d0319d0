//! Awkward but valid `#[eventual]` traits, which must all compile without a
//! warning: argument and return shapes, attributes, visibilities and
//! attribute arguments.
#![deny(warnings, missing_docs)]

use std::collections::{BTreeMap, HashMap};

use rpc_core::{eventual, Promise, RpcError};
use serde::{Deserialize, Serialize};

/// A struct argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// x.
    pub x: i32,
    /// y.
    pub y: i32,
}

/// An enum argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A point.
    Dot(Point),
    /// A circle.
    Circle {
        /// Its centre.
        centre: Point,
        /// Its radius.
        radius: u32,
    },
    /// Nothing.
    Empty,
}

/// An application error, convertible from framework errors.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum ShapeError {
    /// The shape is too big.
    TooBig(u32),
    /// The framework failed.
    Rpc(String),
}

impl From<RpcError> for ShapeError {
    fn from(err: RpcError) -> Self {
        ShapeError::Rpc(err.to_string())
    }
}

/// A capability returned and taken by other traits.
#[eventual]
pub trait Leaf {
    /// Its label.
    fn label(&self) -> String;
}

/// Every argument shape.
#[eventual]
pub trait Arguments {
    /// Sixteen arguments, the most a method may take.
    #[allow(clippy::too_many_arguments)]
    fn many(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: u128,
        f: i8,
        g: i16,
        h: i32,
        i: i64,
        j: i128,
        k: f32,
        l: f64,
        m: bool,
        n: char,
        o: String,
        p: (),
    ) -> String;
    /// Compound values.
    #[allow(clippy::too_many_arguments)]
    async fn compound(
        &self,
        tuple: (u8, String, (bool, char)),
        point: Point,
        shape: Shape,
        list: Vec<Shape>,
        maybe: Option<Box<Point>>,
        map: HashMap<String, Vec<u8>>,
        tree: BTreeMap<u32, Option<String>>,
        array: [u8; 4],
    ) -> usize;
    /// Patterns instead of names.
    fn patterns(&self, _: u32, (a, b): (u8, u8), Point { x, y }: Point, mut m: u8) -> i32;
    /// Capabilities as arguments, alone or inside values.
    async fn capabilities(&self, leaf: LeafProxy, more: Vec<LeafProxy>, maybe: Option<LeafProxy>);
    /// Fully qualified types.
    fn qualified(&self, s: ::std::string::String, v: std::vec::Vec<crate::Point>) -> ::core::primitive::u64;
}

/// Every return shape.
#[eventual]
pub trait Returns {
    /// No arguments, nothing returned.
    fn nothing(&self);
    /// An explicit unit.
    async fn unit(&self) -> ();
    /// `Result<(), E>`.
    async fn check(&self, size: u32) -> Result<(), ShapeError>;
    /// A fully qualified `Result`.
    fn qualified(&self) -> ::core::result::Result<Shape, ShapeError>;
    /// A capability, pipelined.
    fn leaf(&self) -> LeafProxy;
    /// A capability from an async method.
    async fn async_leaf(&self, label: String) -> LeafProxy;
    /// A capability or an error.
    async fn maybe_leaf(&self) -> Result<LeafProxy, ShapeError>;
    /// Capabilities inside a value.
    fn leaves(&self) -> Vec<LeafProxy>;
    /// A result whose error is the framework's.
    fn framework(&self) -> Result<u8, RpcError>;
    /// An alias of `Result` with one argument is a plain value.
    fn alias(&self) -> Alias<u8>;
}

/// A one-argument `Result` alias.
pub type Alias<T> = Result<T, String>;

/// Attributes, raw identifiers and deprecations.
#[eventual(id = 0x5eed_u64)]
#[allow(clippy::unused_async)]
pub trait Attributes {
    #[doc = "Docs as an attribute."]
    #[allow(unused_variables)]
    fn documented(&self, x: u8);
    /// A raw identifier.
    fn r#match(&self, r#type: u8) -> u8;
    /// Deprecated methods stay deprecated on the proxy.
    #[deprecated = "use `documented`"]
    fn old(&self);
}

/// An empty interface.
#[eventual]
pub trait Empty {}

pub(crate) mod visibility {
    //! Restricted and private traits.

    #[rpc_core::eventual]
    pub(crate) trait Crate {
        fn get(&self) -> super::Point;
    }

    #[rpc_core::eventual]
    trait Private {
        async fn get(&self) -> u8;
    }

    #[rpc_core::eventual]
    pub(super) trait Parent: std::fmt::Debug {
        fn get(&self) -> Option<super::Shape>;
    }

    #[derive(Debug)]
    struct Server;

    impl Crate for Server {
        fn get(&self) -> super::Point {
            super::Point { x: 1, y: 2 }
        }
    }

    impl Private for Server {
        async fn get(&self) -> u8 {
            1
        }
    }

    impl Parent for Server {
        fn get(&self) -> Option<super::Shape> {
            None
        }
    }

    pub(super) async fn call_all() {
        assert_eq!(CrateProxy::new(Server).get().await.unwrap().y, 2);
        assert_eq!(PrivateProxy::new(Server).get().await.unwrap(), 1);
        assert_eq!(ParentProxy::new(Server).get().await.unwrap(), None);
    }
}

mod renamed {
    //! The runtime under another name.
    use rpc_core as rt;

    #[rt::eventual(crate = rt)]
    pub(crate) trait Renamed {
        fn get(&self) -> u8;
    }

    struct Server;

    impl Renamed for Server {
        fn get(&self) -> u8 {
            3
        }
    }

    pub(super) async fn call() -> u8 {
        RenamedProxy::new(Server).get().await.unwrap()
    }
}

struct Server;

impl Leaf for Server {
    fn label(&self) -> String {
        "leaf".into()
    }
}

impl Arguments for Server {
    #[allow(clippy::too_many_arguments)]
    fn many(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: u128,
        f: i8,
        g: i16,
        h: i32,
        i: i64,
        j: i128,
        k: f32,
        l: f64,
        m: bool,
        n: char,
        o: String,
        (): (),
    ) -> String {
        format!("{a} {b} {c} {d} {e} {f} {g} {h} {i} {j} {k} {l} {m} {n} {o}")
    }
    #[allow(clippy::too_many_arguments)]
    async fn compound(
        &self,
        tuple: (u8, String, (bool, char)),
        _point: Point,
        _shape: Shape,
        list: Vec<Shape>,
        maybe: Option<Box<Point>>,
        map: HashMap<String, Vec<u8>>,
        tree: BTreeMap<u32, Option<String>>,
        array: [u8; 4],
    ) -> usize {
        tuple.1.len() + list.len() + usize::from(maybe.is_some()) + map.len() + tree.len() + array.len()
    }
    fn patterns(&self, _: u32, (a, b): (u8, u8), Point { x, y }: Point, m: u8) -> i32 {
        i32::from(a) + i32::from(b) + x + y + i32::from(m)
    }
    async fn capabilities(&self, _leaf: LeafProxy, _more: Vec<LeafProxy>, _maybe: Option<LeafProxy>) {}
    fn qualified(&self, s: String, v: Vec<Point>) -> u64 {
        (s.len() + v.len()) as u64
    }
}

impl Returns for Server {
    fn nothing(&self) {}
    async fn unit(&self) {}
    async fn check(&self, size: u32) -> Result<(), ShapeError> {
        match size {
            0..=9 => Ok(()),
            _ => Err(ShapeError::TooBig(size)),
        }
    }
    fn qualified(&self) -> Result<Shape, ShapeError> {
        Ok(Shape::Empty)
    }
    fn leaf(&self) -> LeafProxy {
        LeafProxy::new(Server)
    }
    async fn async_leaf(&self, _label: String) -> LeafProxy {
        LeafProxy::new(Server)
    }
    async fn maybe_leaf(&self) -> Result<LeafProxy, ShapeError> {
        Ok(LeafProxy::new(Server))
    }
    fn leaves(&self) -> Vec<LeafProxy> {
        vec![LeafProxy::new(Server)]
    }
    fn framework(&self) -> Result<u8, RpcError> {
        Ok(1)
    }
    fn alias(&self) -> Alias<u8> {
        Err("alias".into())
    }
}

impl Attributes for Server {
    fn documented(&self, _x: u8) {}
    fn r#match(&self, r#type: u8) -> u8 {
        r#type
    }
    fn old(&self) {}
}

impl Empty for Server {}

/// The proxies' method signatures, checked by the compiler.
#[allow(dead_code)]
fn signatures(args: &ArgumentsProxy, returns: &ReturnsProxy, attributes: &AttributesProxy) {
    let _v1: Promise<String> = args.many(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11.0, 12.0, true, 'n', "o".into(), ());
    let _v2: Promise<i32> = args.patterns(0, (1, 2), Point { x: 3, y: 4 }, 5);
    let _v3: Promise<()> = returns.nothing();
    let _v4: Promise<()> = returns.unit();
    let _v5: Promise<(), ShapeError> = returns.check(3);
    let _v6: Promise<Shape, ShapeError> = returns.qualified();
    let _v7: LeafProxy = returns.leaf();
    let _v8: LeafProxy = returns.async_leaf("a".into());
    let _v9: Promise<LeafProxy, ShapeError> = returns.maybe_leaf();
    let _v10: Promise<Vec<LeafProxy>> = returns.leaves();
    let _v11: Promise<u8, RpcError> = returns.framework();
    let _v12: Promise<Alias<u8>> = returns.alias();
    let _v13: Promise<u8> = attributes.r#match(1);
}

/// Proxies have the capability traits.
fn assert_capability<C: rpc_core::Capability + std::fmt::Debug>() {}

#[test]
fn proxies_are_capabilities() {
    assert_capability::<LeafProxy>();
    assert_capability::<ArgumentsProxy>();
    assert_capability::<ReturnsProxy>();
    assert_capability::<AttributesProxy>();
    assert_capability::<EmptyProxy>();
    let _ = EmptyProxy::new(Server);
}

#[test]
fn a_trait_inside_a_function_expands() {
    #[eventual]
    trait Local {
        fn get(&self) -> u8;
    }
    struct Here;
    impl Local for Here {
        fn get(&self) -> u8 {
            7
        }
    }
    let _get = LocalProxy::new(Here).get();
}

#[tokio::test]
async fn arguments_arrive_in_order() {
    let args = ArgumentsProxy::new(Server);
    let all = args.many(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11.5, 12.5, true, 'n', "o".into(), ()).await.unwrap();
    assert_eq!(all, "1 2 3 4 5 6 7 8 9 10 11.5 12.5 true n o");
    assert_eq!(args.patterns(100, (1, 2), Point { x: 3, y: 4 }, 5).await.unwrap(), 15);
    let list = vec![Shape::Empty, Shape::Circle { centre: Point { x: 0, y: 0 }, radius: 1 }];
    let map = HashMap::from([("k".to_string(), vec![1])]);
    let tree = BTreeMap::from([(1, None), (2, Some("x".into()))]);
    let total = args.compound(
        (1, "ab".into(), (true, 'c')),
        Point { x: 1, y: 2 },
        Shape::Dot(Point { x: 0, y: 0 }),
        list,
        Some(Box::new(Point { x: 1, y: 1 })),
        map,
        tree,
        [0; 4],
    );
    assert_eq!(total.await.unwrap(), 2 + 2 + 1 + 1 + 2 + 4);
    assert_eq!(args.qualified("abc".into(), vec![]).await.unwrap(), 3);
}

#[tokio::test]
async fn results_and_errors_come_back_typed() {
    let returns = ReturnsProxy::new(Server);
    returns.nothing().await.unwrap();
    returns.unit().await.unwrap();
    assert_eq!(returns.check(3).await, Ok(()));
    assert_eq!(returns.check(30).await, Err(ShapeError::TooBig(30)));
    assert_eq!(returns.qualified().await, Ok(Shape::Empty));
    assert_eq!(returns.alias().await.unwrap(), Err("alias".to_string()));
    assert_eq!(returns.framework().await.unwrap(), 1);
    let attributes = AttributesProxy::new(Server);
    assert_eq!(attributes.r#match(9).await.unwrap(), 9);
}

#[tokio::test]
async fn restricted_and_renamed_traits_work() {
    visibility::call_all().await;
    assert_eq!(renamed::call().await, 3);
}

#[tokio::test]
async fn returned_proxies_are_pipelined() {
    let returns = ReturnsProxy::new(Server);
    assert_eq!(returns.leaf().label().await.unwrap(), "leaf");
    assert_eq!(returns.async_leaf("x".into()).label().await.unwrap(), "leaf");
    assert_eq!(returns.maybe_leaf().pipeline().label().await.unwrap(), "leaf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_and_their_calls_move_across_threads() {
    let returns = ReturnsProxy::new(Server);
    let task = tokio::spawn(async move { returns.check(30).await });
    assert_eq!(task.await.unwrap(), Err(ShapeError::TooBig(30)));
}
