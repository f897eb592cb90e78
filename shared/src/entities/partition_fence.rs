use sea_orm::entity::prelude::*;

/// The highest fencing token (lease revision) that committed a batch for a
/// partition; a batch carrying a lower token is rejected.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "partition_fences")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub partition: i32,
    pub token: i64,
    pub owner: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
