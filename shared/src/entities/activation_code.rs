use sea_orm::entity::prelude::*;

/// An activation code. `code` is a secret: never log a model.
#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "activation_codes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub gift_card_id: Uuid,
    pub code: String,
    pub is_used: bool,
    pub purchase_id: Option<Uuid>,
    pub expires_on: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivationCode")
            .field("id", &self.id)
            .field("gift_card_id", &self.gift_card_id)
            .field("code", &"<redacted>")
            .field("is_used", &self.is_used)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
