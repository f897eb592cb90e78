use sea_orm::entity::prelude::*;

/// A ledger line: `kind` is `credit` (positive `amount`, unique `reference`)
/// or `purchase` (negative `amount`, `purchase_id` set).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "wallet_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: String,
    pub kind: String,
    pub amount: Decimal,
    pub reference: Option<String>,
    pub purchase_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
