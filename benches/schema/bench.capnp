# The capnp-rpc contender: the same shapes as the other contenders.
@0xf94036e0d4bcac1a;

struct Small {
  id @0 :UInt64;
  x @1 :UInt32;
  flags @2 :UInt16;
}

# The bootstrap interface.
interface Bench {
  # A 64-byte request, the same 64 bytes back.
  echo @0 (data :Data) -> (data :Data);
  # The first node of a chain.
  root @1 () -> (node :Node);
  # Streams `count` items into `sink` (with `-> stream` flow control), then calls `done`.
  items @2 (count :UInt64, sink :Sink) -> ();
}

interface Node {
  # The next node down (pipelinable).
  next @0 () -> (node :Node);
  # The node's depth.
  depth @1 () -> (depth :UInt32);
}

interface Sink {
  push @0 (item :Small) -> stream;
  done @1 () -> ();
}
