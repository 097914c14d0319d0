//! The `#[eventual]` attribute, re-exported by `rpc_core` as
//! `rpc_core::eventual`.
//!
//! This crate is a thin shim: all the work happens in `rpc-codegen`, a
//! plain library that can be tested on its own.

use proc_macro::TokenStream;

/// Turns a trait into a remote interface: generates a capability type
/// `{Trait}Proxy` that calls it, and a server stub that serves it.
///
/// ```
/// use rpc_core::{eventual, Promise};
///
/// #[eventual]
/// pub trait Counter {
///     /// Adds `n` and returns the new total.
///     async fn add(&self, n: u64) -> u64;
///     /// The current total, without waiting.
///     fn get(&self) -> u64;
/// }
///
/// struct Local(std::sync::atomic::AtomicU64);
///
/// impl Counter for Local {
///     async fn add(&self, n: u64) -> u64 {
///         self.0.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n
///     }
///     fn get(&self) -> u64 {
///         self.0.load(std::sync::atomic::Ordering::SeqCst)
///     }
/// }
///
/// // The same proxy type wraps a local object or a remote one.
/// let counter = CounterProxy::new(Local(Default::default()));
/// let total: Promise<u64> = counter.add(2);
/// # drop(total);
/// ```
///
/// # What is generated
///
/// - The trait itself, with `Send + Sync + 'static` supertraits and every
///   `async fn m(..) -> R` turned into `fn m(..) -> impl Future<Output = R> + Send`
///   (implement it with `async fn` as usual).
/// - `{Trait}Proxy`, the capability: `Clone`, `Debug`, `Serialize`,
///   `Deserialize` and `rpc_core::Capability`, with `new(object)` to wrap a
///   local object, `broken(error)` for a proxy whose calls all fail,
///   `when_broken()` (resolves once the capability can no longer be called:
///   its connection closed, the call that promised it failed), and one
///   method per trait method. Those names (and `client`, `from_client`) are
///   taken: a trait method called so is an error.
///
/// # Return types
///
/// | the method returns | the proxy method returns |
/// |---|---|
/// | `T` | `Promise<T>` |
/// | `Result<T, E>` | `Promise<T, E>` |
/// | `FooProxy` (a capability) | `FooProxy` at once, pipelined on the call |
/// | `Sequence<T>` / `Bytes` | the stream at once; items flow before the reply |
/// | `Result<Sequence<T>, E>` / `Result<Bytes, E>` | `Promise<Sequence<T>, E>` / `Promise<Bytes, E>`: the typed error, or the stream, whose items follow the reply |
///
/// `E` needs `Serialize + DeserializeOwned + Debug`. Awaiting a
/// `Promise<T, E>` gives `Result<T, E>` and asks `E: From<RpcError>` (so
/// framework failures become an `E`); `promise.split_errors().await` gives
/// `Result<T, CallError<E>>` instead and asks nothing more of `E` (see
/// `rpc_core::CallError`). A stream can also end with an application
/// error after some items: `writer.close(Some(RpcError::application(&e)))`,
/// read back with `err.application_value::<E>()`.
///
/// # Panics in handlers
///
/// A method that panics fails its own call and nothing more. The caller gets
/// an `RpcError` of kind `ErrorKind::HandlerPanicked` whose message names the
/// method and carries the panic message (a `Result<T, E>` method's caller gets
/// it through `E: From<RpcError>`); a `Sequence` or `Bytes` the method was
/// about to return ends with that error. This holds for plain `fn` and
/// `async fn` methods, whether the panic comes at once or after an await,
/// and for panics in the arguments' `Deserialize` or the result's `Serialize`.
/// The object goes on serving later calls, and other objects and
/// connections never notice. The process's panic hook still runs (and
/// prints the panic, by default). A panic in a task the method spawned is
/// that task's own business, as usual with tokio.
///
/// (`rpc_core::ErrorKind::HandlerPanicked` has an example.)
///
/// # Arguments
///
/// - `id = 0x...u64`: the interface id on the wire (by default, a hash of
///   the trait name).
/// - `crate = path`: where the runtime is, if not at `::rpc_core`.
///
/// # Restrictions
///
/// Methods take `&self` and owned, serializable arguments (at most 16); the
/// trait has no generics, associated items or default bodies. Every
/// violation is reported at once, pointing at the offending tokens.
#[proc_macro_attribute]
pub fn eventual(attr: TokenStream, item: TokenStream) -> TokenStream {
    rpc_codegen::expand(attr.into(), item.into()).into()
}
