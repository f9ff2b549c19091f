//! # request-path
//!
//! The one reading of a request path. A trust proxy keeps one promise: the request the app
//! handles is the request that was checked. For the path that means one function turns what
//! the client wrote into a single canonical form, every route rule (the sidecar's native
//! prefixes and the Wasm plugins alike) matches that form, and that form is what the app
//! receives. Spellings that two HTTP parsers could read differently are refused instead of
//! guessed at.
//!
//! ```
//! use request_path::{canonical_path, PathRejection, RoutePrefix};
//!
//! assert_eq!(canonical_path("/%66l/./update").unwrap(), "/fl/update");
//! assert_eq!(canonical_path("/fl%2fupdate"), Err(PathRejection::EncodedSeparator));
//! let signed = RoutePrefix::new("/fl/").unwrap();
//! assert!(signed.covers("/fl/update") && signed.covers("/fl"));
//! assert!(!signed.covers("/flx"));
//! ```
//!
//! The rules, and why, are in [`canonical`]; matching is in [`prefix`].
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`canonical`] | [`canonical_path`]: the form every check, plugin and app sees; [`PathRejection`], this crate's one error type |
//! | [`prefix`] | [`RoutePrefix`]: segment-wise route matching on that form |
//!
//! It has no dependencies and no I/O, so the sidecar (`proxy/`), the plugin SDK (built for
//! `wasm32-wasip2`) and the fuzz targets use this very code.

pub mod canonical;
pub mod prefix;

pub use canonical::{PathRejection, canonical_path, is_canonical};
pub use prefix::RoutePrefix;
