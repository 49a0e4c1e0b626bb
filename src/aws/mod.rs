//! The only module that talks to AWS: one file per kind of resource.

pub mod error;
pub mod tags;

pub use error::{AwsError, AwsResult, ErrorClass};
pub use tags::OwnershipTags;
