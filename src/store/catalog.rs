//! `marketplace_status_codes`: status catalogues published by marketplace APIs.

use sqlx::PgPool;

use crate::domain::MarketplaceKind;
use crate::marketplace::StatusDescription;

/// Stores a marketplace's catalogue, replacing descriptions that changed.
pub async fn replace(
    pool: &PgPool,
    marketplace: MarketplaceKind,
    codes: &[StatusDescription],
) -> Result<(), sqlx::Error> {
    let (code, description): (Vec<&str>, Vec<&str>) = codes
        .iter()
        .map(|c| (c.code.as_str(), c.description.as_str()))
        .unzip();
    sqlx::query(
        "insert into marketplace_status_codes (marketplace, code, description)
         select $1, t.code, t.description from unnest($2::text[], $3::text[]) as t(code, description)
         on conflict (marketplace, code) do update
            set description = excluded.description, fetched_at = now()",
    )
    .bind(marketplace.as_str())
    .bind(&code)
    .bind(&description)
    .execute(pool)
    .await?;
    Ok(())
}
