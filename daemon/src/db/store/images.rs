//! Which members hold which image, and the cluster's image aliases.

use super::{DbError, Store, dispatch, record_image};

/// Aliases of images no member holds any more.
pub(super) const DELETE_ORPHAN_ALIASES: &str = "DELETE FROM cluster_image_aliases \
     WHERE fingerprint NOT IN (SELECT fingerprint FROM cluster_images)";

impl Store {
    /// Record that `member` holds the image `fingerprint`, and point `aliases` at it.
    pub async fn add_image(
        &self,
        fingerprint: &str,
        member: &str,
        aliases: &[String],
    ) -> Result<(), DbError> {
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            record_image!(tx, fingerprint, member, aliases);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The members holding the image `fingerprint` (or the one image it is a prefix of),
    /// by name; none if no image, or several, match.
    pub async fn image_holders(&self, fingerprint: &str) -> Result<Vec<String>, DbError> {
        if fingerprint.is_empty() {
            return Ok(Vec::new());
        }
        let mut holders: Vec<(String, String)> = dispatch!(self, pool, _d => {
            sqlx::query_as(
                "SELECT fingerprint, member FROM cluster_images \
                 WHERE SUBSTR(fingerprint, 1, LENGTH($1)) = $1",
            )
            .bind(fingerprint)
            .fetch_all(pool)
            .await?
        });
        if holders.iter().any(|(f, _)| f == fingerprint) {
            holders.retain(|(f, _)| f == fingerprint);
        } else if holders.iter().any(|(f, _)| *f != holders[0].0) {
            return Ok(Vec::new());
        }
        let mut members: Vec<String> = holders.into_iter().map(|(_, m)| m).collect();
        members.sort();
        Ok(members)
    }

    /// The fingerprint `alias` points at.
    pub async fn resolve_image_alias(&self, alias: &str) -> Result<Option<String>, DbError> {
        dispatch!(self, pool, _d => {
            let fingerprint: Option<String> = sqlx::query_scalar(
                "SELECT fingerprint FROM cluster_image_aliases WHERE name = $1",
            )
            .bind(alias)
            .fetch_optional(pool)
            .await?;
            Ok(fingerprint)
        })
    }

    /// `member` no longer holds the image `fingerprint` (the full one). When no member
    /// does any more, its aliases go too.
    pub async fn remove_image_holder(
        &self,
        fingerprint: &str,
        member: &str,
    ) -> Result<(), DbError> {
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            sqlx::query("DELETE FROM cluster_images WHERE fingerprint = $1 AND member = $2")
                .bind(fingerprint)
                .bind(member)
                .execute(&mut *tx)
                .await?;
            sqlx::query(DELETE_ORPHAN_ALIASES).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
