//! What starts a reconcile of our own kinds: a watch filtered to the changes
//! the user makes (generation: spec and deletion; finalizers; annotations,
//! such as the pause). The operator's own status writes pass no event, so
//! each write does not cost another pass over AWS; the requeue a reconcile
//! returns (progress poll, resync, backoff) brings the next one.

use futures::Stream;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{predicates, watcher, Predicate, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// The store of `api`'s objects and the stream of their user changes.
pub fn user_changes<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changes = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(predicates::annotations),
            Default::default(),
        );
    (reader, changes)
}
