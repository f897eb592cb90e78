use sea_orm::entity::prelude::*;

/// A partition's current owner and its fencing token (epoch, token): a
/// batch carrying another token is fenced off, and a claim with a lower one
/// is refused.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "partition_fences")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub partition: i32,
    /// The lease bucket's creation time (µs since 1970).
    pub epoch: i64,
    /// The lease's revision in that bucket.
    pub token: i64,
    pub owner: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
