use sea_orm::entity::prelude::*;

/// A purchase the worker dead-lettered, and what operators did with it.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub purchase_id: Option<Uuid>,
    pub gift_card_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub reason: String,
    pub attempts: i32,
    pub original_subject: String,
    pub original_sequence: i64,
    pub dlq_sequence: i64,
    /// `pending`, `replayed` or `discarded`.
    pub state: String,
    pub dead_lettered_at: DateTimeUtc,
    pub resolved_at: Option<DateTimeUtc>,
    pub resolved_by: Option<String>,
    /// The dead letter whose replay this message was, if any.
    pub replayed_from: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
