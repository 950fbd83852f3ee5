//! The [`Store`] the daemon currently uses, swappable at run time: a standalone server's
//! SQLite becomes the cluster's PostgreSQL when it enables clustering or joins.

use std::sync::{Arc, PoisonError, RwLock};

use super::store::Store;

/// The current store. Cheap to clone; every clone sees a swap.
#[derive(Clone)]
pub struct SharedStore(Arc<RwLock<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore(Arc::new(RwLock::new(store)))
    }

    /// The store now (a cheap clone of its pool).
    pub fn get(&self) -> Store {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Use `store` from now on.
    pub fn set(&self, store: Store) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = store;
    }
}
