//! Payload types representative of what the framework and its tests carry:
//! structs with `Vec`, `Option`, `String`, maps, nested and recursive enums,
//! and values holding proxies, sequences and byte streams.

use std::collections::BTreeMap;

use rpc_core::{Bytes, BytesWriter, Sequence, SequenceWriter};
use serde::{Deserialize, Serialize};

use crate::service::ChildProxy;

/// A plain value: every shape postcard encodes, no capability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub delta: i32,
    pub name: String,
    pub tags: Vec<String>,
    pub score: Option<u16>,
    pub shape: Shape,
    pub blobs: Vec<Vec<u8>>,
    pub index: BTreeMap<String, u32>,
    pub pair: (bool, char),
    pub tree: Tree,
}

/// An enum with unit, tuple and struct variants, nested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    Empty,
    Point(i64, i64),
    Labelled { label: String, inner: Box<Shape> },
    Many(Vec<Shape>),
    Maybe(Option<Box<Shape>>),
}

/// A recursive value, for the depth limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tree {
    Leaf(u8),
    Node(Vec<Tree>),
}

/// An item of an uploaded or downloaded sequence (used by the server too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Number(u64),
    Text(String),
    Pair { key: String, value: Option<Vec<u32>> },
}

/// A value holding capabilities and stream ends in fields.
#[derive(Serialize, Deserialize)]
pub struct WithCaps {
    pub child: ChildProxy,
    pub numbers: Sequence<u64>,
    pub sink: SequenceWriter<Item>,
    pub data: Bytes,
    pub maybe: Option<ChildProxy>,
    pub many: Vec<ChildProxy>,
    pub nested: Sequence<Sequence<u32>>,
    pub upload: BytesWriter,
    pub record: Record,
}

/// An enum whose variants hold capabilities (an item type of a sequence).
#[derive(Serialize, Deserialize)]
pub enum CapItem {
    Plain(Item),
    Child(ChildProxy),
    Stream { name: String, items: Sequence<Item> },
    Raw(Bytes),
    Both(Box<CapItem>, Option<Box<CapItem>>),
}

/// A sample `Record`, for seeds.
pub fn sample_record(n: u64) -> Record {
    Record {
        id: n,
        delta: -(n as i32),
        name: format!("record {n}"),
        tags: vec!["a".into(), "bc".into()],
        score: Some(7),
        shape: Shape::Labelled {
            label: "outer".into(),
            inner: Box::new(Shape::Many(vec![Shape::Empty, Shape::Point(-1, 2), Shape::Maybe(None)])),
        },
        blobs: vec![vec![1, 2, 3], vec![]],
        index: [("x".to_string(), 1), ("y".to_string(), 2)].into_iter().collect(),
        pair: (true, 'λ'),
        tree: Tree::Node(vec![Tree::Leaf(1), Tree::Node(vec![Tree::Leaf(2)])]),
    }
}
