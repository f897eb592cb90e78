//! Reading a stored purchase back as the client-facing [`PurchaseView`]
//! (used by the api for reads and by the worker to answer redeliveries).

use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, Statement};
use uuid::Uuid;

use crate::contract::{AcceptedPurchase, PurchaseErrorView, PurchaseView};
use crate::domain::{money_string, PurchaseStatus};
use crate::entities::purchase;

/// Builds the view of a stored purchase; `codes` are its activation codes.
pub fn view_of(model: &purchase::Model, codes: Vec<String>) -> PurchaseView {
    let status = PurchaseStatus::parse(&model.status).unwrap_or(PurchaseStatus::Failed);
    PurchaseView {
        id: model.id,
        user_id: model.user_id.clone(),
        gift_card_id: model.gift_card_id,
        quantity: model.quantity as u8,
        status,
        unit_price: model.unit_price.map(money_string),
        total: model.total.map(money_string),
        activation_codes: (status == PurchaseStatus::Succeeded).then_some(codes),
        error: model.error_code.as_ref().map(|code| PurchaseErrorView {
            code: code.clone(),
            message: model.error_message.clone().unwrap_or_default(),
        }),
        sequence: model.stream_sequence as u64,
        created_at: model.created_at,
        completed_at: model.completed_at,
    }
}

/// The view of a purchase that is accepted but not yet processed.
pub fn pending_view(a: &AcceptedPurchase) -> PurchaseView {
    PurchaseView {
        id: a.purchase_id,
        user_id: a.user_id.clone(),
        gift_card_id: a.gift_card_id,
        quantity: a.quantity,
        status: PurchaseStatus::Pending,
        unit_price: None,
        total: None,
        activation_codes: None,
        error: None,
        sequence: a.sequence,
        created_at: a.accepted_at,
        completed_at: None,
    }
}

#[derive(FromQueryResult)]
struct CodeRow {
    purchase_id: Uuid,
    code: String,
}

/// Activation codes of the given purchases, grouped by purchase.
pub async fn codes_of<C: ConnectionTrait>(
    db: &C,
    purchase_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<String>>, DbErr> {
    let mut out: std::collections::HashMap<Uuid, Vec<String>> = Default::default();
    if purchase_ids.is_empty() {
        return Ok(out);
    }
    let rows = CodeRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT purchase_id, code FROM activation_codes WHERE purchase_id = ANY($1) ORDER BY purchase_id, code",
        [purchase_ids.to_vec().into()],
    ))
    .all(db)
    .await?;
    for r in rows {
        out.entry(r.purchase_id).or_default().push(r.code);
    }
    Ok(out)
}

/// A stored purchase with its codes, and the request hash it was made with.
pub async fn load<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<Option<(PurchaseView, purchase::Model)>, DbErr> {
    let Some(model) = purchase::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let codes = if model.status == PurchaseStatus::Succeeded.as_str() {
        codes_of(db, &[id]).await?.remove(&id).unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(Some((view_of(&model, codes), model)))
}
