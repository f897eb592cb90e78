//! Admin routes: cards, code imports, code withdrawal, wallet credits.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{delete, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use giftcard_shared::db::values_clause;
use giftcard_shared::domain::{Money, UserId, NUMERIC_14_2_MAX};
use giftcard_shared::entities::gift_card;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Set, Statement,
    TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::catalog::{load_card, load_wallet, GiftCardView, WalletView};
use crate::error::{ApiError, ApiResult, ConflictCode, ErrorBody};
use crate::extract::{json_rejection, Admin, ApiJson, ApiPath};
use crate::state::AppState;

/// Largest accepted code import (about 250k rows).
const IMPORT_LIMIT: usize = 16 * 1024 * 1024;
const IMPORT_MAX_ROWS: usize = 250_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/gift-cards", post(create_card))
        .route("/v1/admin/gift-cards/{id}", patch(update_card))
        .route(
            "/v1/admin/gift-cards/{id}/codes",
            post(import_codes).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route(
            "/v1/admin/gift-cards/{id}/codes/{code}",
            delete(delete_code),
        )
        .route("/v1/admin/wallets/{user_id}/credits", post(credit_wallet))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCard {
    /// 1..=200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(value_type = String, example = "10.00", pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub price: Money,
    #[schema(value_type = String, example = "10.00", pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub value: Money,
}

fn check_name(name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "name must be 1 to 200 characters, none of them control characters".into(),
        ));
    }
    Ok(n.to_owned())
}

/// Create a gift card.
#[utoipa::path(post, path = "/v1/admin/gift-cards", tag = "admin", request_body = CreateCard,
    responses((status = 201, body = GiftCardView), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_card(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateCard>,
) -> ApiResult<(StatusCode, Json<GiftCardView>)> {
    let now = Utc::now();
    let card = gift_card::ActiveModel {
        id: Set(Uuid::new_v4()),
        name: Set(check_name(&body.name)?),
        price: Set(body.price.amount()),
        value: Set(body.value.amount()),
        active: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    let view = load_card(&state.db, card.id)
        .await?
        .ok_or(ApiError::GiftCardNotFound(card.id))?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCard {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(value_type = Option<String>, example = "12.50", pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub price: Option<Money>,
    pub active: Option<bool>,
}

/// Rename, reprice, or (de)activate a card. A new price applies to
/// purchases processed after the change.
#[utoipa::path(patch, path = "/v1/admin/gift-cards/{id}", tag = "admin", request_body = UpdateCard,
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = GiftCardView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_card(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateCard>,
) -> ApiResult<Json<GiftCardView>> {
    let card = gift_card::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::GiftCardNotFound(id))?;
    let mut card: gift_card::ActiveModel = card.into();
    if let Some(name) = &body.name {
        card.name = Set(check_name(name)?);
    }
    if let Some(price) = body.price {
        card.price = Set(price.amount());
    }
    if let Some(active) = body.active {
        card.active = Set(active);
    }
    card.updated_at = Set(Utc::now());
    card.update(&state.db).await?;
    Ok(Json(
        load_card(&state.db, id)
            .await?
            .ok_or(ApiError::GiftCardNotFound(id))?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeImport {
    pub codes: Vec<CodeRow>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRow {
    /// 1..=64 visible ASCII characters.
    #[schema(pattern = "^[!-~]{1,64}$")]
    pub code: String,
    /// null (never expires), RFC 3339, or `YYYY-MM-DD` (00:00 UTC).
    #[serde(default)]
    pub expires_on: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub inserted: u64,
    pub duplicates: u64,
}

fn parse_expiry(s: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(Some(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()));
    }
    Err(format!(
        "expires_on {s:?} is neither empty, an RFC 3339 timestamp nor a YYYY-MM-DD date"
    ))
}

fn check_code(code: &str) -> Result<(), String> {
    if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("code must be 1 to 64 visible ASCII characters".into());
    }
    Ok(())
}

type ParsedCode = (String, Option<DateTime<Utc>>);

/// Checks every row while reading it, and stops at the row cap: one bad
/// row rejects the whole import, and however many rows the body holds,
/// no more than the cap are ever kept in memory.
fn parse_codes(headers: &HeaderMap, body: &Bytes) -> ApiResult<Vec<ParsedCode>> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("text/csv") {
        parse_csv(body)
    } else if ctype.starts_with("application/json") {
        parse_json(body)
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send codes as `application/json` ({\"codes\": [...]}) or `text/csv` (header code,expires_on)".into(),
        ))
    }
}

fn too_many_rows() -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "at most {IMPORT_MAX_ROWS} codes per import; split the file"
    ))
}

/// One checked row (`row` counts from 1, for the message).
fn parse_row(row: usize, code: &str, expires_on: Option<&str>) -> ApiResult<ParsedCode> {
    check_code(code).map_err(|e| ApiError::Unprocessable(format!("row {row}: {e}")))?;
    let exp =
        parse_expiry(expires_on).map_err(|e| ApiError::Unprocessable(format!("row {row}: {e}")))?;
    Ok((code.to_owned(), exp))
}

fn parse_csv(body: &[u8]) -> ApiResult<Vec<ParsedCode>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let hdr = rdr
        .headers()
        .map_err(|e| ApiError::Unprocessable(format!("CSV header unreadable: {e}")))?;
    if hdr.get(0) != Some("code")
        || hdr.len() > 2
        || (hdr.len() == 2 && hdr.get(1) != Some("expires_on"))
    {
        return Err(ApiError::Unprocessable(
            "the CSV header must be `code,expires_on`".into(),
        ));
    }
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    for row in 1.. {
        let more = rdr
            .read_record(&mut record)
            .map_err(|e| ApiError::Unprocessable(format!("row {row}: {e}")))?;
        if !more {
            break;
        }
        if row > IMPORT_MAX_ROWS {
            return Err(too_many_rows());
        }
        out.push(parse_row(row, record.get(0).unwrap_or(""), record.get(1))?);
    }
    Ok(out)
}

fn parse_json(body: &[u8]) -> ApiResult<Vec<ParsedCode>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Import {
        codes: BoundedRows,
    }
    let import: Import = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest("the request body is not valid JSON".into())
        } else if e.to_string().starts_with(TOO_MANY_ROWS) {
            too_many_rows()
        } else {
            ApiError::Unprocessable(format!(
                "the request body does not match the expected shape: {e}"
            ))
        }
    })?;
    import
        .codes
        .0
        .into_iter()
        .enumerate()
        .map(|(i, c)| parse_row(i + 1, &c.code, c.expires_on.as_deref()))
        .collect()
}

const TOO_MANY_ROWS: &str = "too many codes";

/// The `codes` array of a JSON import, refused while reading once it holds
/// more than the row cap.
struct BoundedRows(Vec<CodeRow>);

impl<'de> Deserialize<'de> for BoundedRows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Rows;
        impl<'de> serde::de::Visitor<'de> for Rows {
            type Value = BoundedRows;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of codes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BoundedRows, A::Error> {
                let mut rows = Vec::new();
                while let Some(row) = seq.next_element::<CodeRow>()? {
                    if rows.len() == IMPORT_MAX_ROWS {
                        return Err(serde::de::Error::custom(TOO_MANY_ROWS));
                    }
                    rows.push(row);
                }
                Ok(BoundedRows(rows))
            }
        }
        d.deserialize_seq(Rows)
    }
}

/// Import activation codes (JSON or CSV); codes already present are counted
/// as duplicates, so importing a file twice inserts nothing the second time.
#[utoipa::path(post, path = "/v1/admin/gift-cards/{id}/codes", tag = "admin",
    params(("id" = String, Path, format = Uuid)),
    request_body(content = CodeImport, description = "JSON, or text/csv with header `code,expires_on`"),
    responses((status = 200, body = ImportResult), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn import_codes(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<ImportResult>> {
    let body = body
        .map_err(|e| json_rejection(axum::extract::rejection::JsonRejection::BytesRejection(e)))?;
    let codes = parse_codes(&headers, &body)?;
    gift_card::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::GiftCardNotFound(id))?;
    let txn = state.db.begin().await?;
    let mut inserted = 0;
    for chunk in codes.chunks(2000) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
        for (code, exp) in chunk {
            values.extend([
                Uuid::new_v4().into(),
                id.into(),
                code.clone().into(),
                (*exp).into(),
            ]);
        }
        let mut sql = format!(
            "INSERT INTO activation_codes (id, gift_card_id, code, expires_on) VALUES {}",
            values_clause(chunk.len(), &["uuid", "uuid", "text", "timestamptz"])
        );
        sql.push_str(" ON CONFLICT (gift_card_id, code) DO NOTHING");
        inserted += txn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await?
            .rows_affected();
    }
    if inserted > 0 {
        // Tells the card's worker that codes may now sort before the last
        // one it claimed (it restarts its scan of the card).
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE gift_cards SET updated_at = clock_timestamp() WHERE id = $1",
            [id.into()],
        ))
        .await?;
    }
    txn.commit().await?;
    metrics::counter!(crate::telemetry::CODES_IMPORTED).increment(inserted);
    Ok(Json(ImportResult {
        inserted,
        duplicates: codes.len() as u64 - inserted,
    }))
}

/// Withdraw an unused code (soft delete).
#[utoipa::path(delete, path = "/v1/admin/gift-cards/{id}/codes/{code}", tag = "admin",
    params(("id" = String, Path, format = Uuid), ("code" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "ACTIVATION_CODE_USED", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_code(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath((id, code)): ApiPath<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    // No such code can exist (and PostgreSQL refuses some such text).
    check_code(&code).map_err(ApiError::BadRequest)?;
    #[derive(sea_orm::FromQueryResult)]
    struct Row {
        is_used: bool,
    }
    let row = Row::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE activation_codes SET deleted_at = COALESCE(deleted_at, now()) \
         WHERE gift_card_id = $1 AND code = $2 AND NOT is_used RETURNING is_used",
        [id.into(), code.clone().into()],
    ))
    .one(&state.db)
    .await?;
    if row.is_some_and(|r| !r.is_used) {
        return Ok(StatusCode::NO_CONTENT);
    }
    let used = Row::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT is_used FROM activation_codes WHERE gift_card_id = $1 AND code = $2",
        [id.into(), code.into()],
    ))
    .one(&state.db)
    .await?;
    match used {
        Some(_) => Err(ApiError::Conflict {
            code: ConflictCode::ActivationCodeUsed,
            message: "this code was already sold and cannot be withdrawn".into(),
        }),
        None => Err(ApiError::NotFound("no such code for this gift card".into())),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    #[schema(value_type = String, example = "100.00", pattern = "^[0-9]{1,9}(\\.[0-9]{1,2})?$")]
    pub amount: Money,
    /// Unique per credit: the same reference is applied once only.
    #[schema(min_length = 1, max_length = 255)]
    pub reference: String,
}

/// Credit a wallet, once per `reference`.
#[utoipa::path(post, path = "/v1/admin/wallets/{user_id}/credits", tag = "admin", request_body = Credit,
    params(("user_id" = String, Path)),
    responses((status = 200, body = WalletView), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn credit_wallet(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<Credit>,
) -> ApiResult<Json<WalletView>> {
    let user = UserId::parse(&user).map_err(|e| ApiError::BadRequest(e.0))?;
    let reference = body.reference.trim();
    if reference.is_empty() || reference.len() > 255 || reference.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "reference must be 1 to 255 characters, none of them control characters".into(),
        ));
    }
    let txn = state.db.begin().await?;
    let inserted = txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO wallet_entries (id, user_id, kind, amount, reference) \
             VALUES ($1, $2, 'credit', $3, $4) ON CONFLICT (reference) DO NOTHING",
            [
                Uuid::new_v4().into(),
                user.as_str().into(),
                body.amount.amount().into(),
                reference.into(),
            ],
        ))
        .await?
        .rows_affected();
    if inserted == 1 {
        // $3: the largest balance the column holds; a credit that would
        // go past it updates nothing and is refused (the transaction,
        // with its wallet entry, is rolled back).
        let credited = txn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO wallets (user_id, balance) VALUES ($1, $2) ON CONFLICT (user_id) \
                 DO UPDATE SET balance = wallets.balance + EXCLUDED.balance, updated_at = now() \
                 WHERE wallets.balance + EXCLUDED.balance <= $3",
                [
                    user.as_str().into(),
                    body.amount.amount().into(),
                    NUMERIC_14_2_MAX.into(),
                ],
            ))
            .await?
            .rows_affected();
        if credited == 0 {
            return Err(ApiError::Unprocessable(format!(
                "this credit would take the balance over the largest a wallet holds \
                 ({NUMERIC_14_2_MAX}); nothing was credited"
            )));
        }
    } else {
        #[derive(sea_orm::FromQueryResult)]
        struct Prior {
            user_id: String,
            amount: rust_decimal::Decimal,
        }
        let prior = Prior::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT user_id, amount FROM wallet_entries WHERE reference = $1",
            [reference.into()],
        ))
        .one(&txn)
        .await?;
        if !prior.is_some_and(|p| p.user_id == user.as_str() && p.amount == body.amount.amount()) {
            return Err(ApiError::Unprocessable(format!(
                "reference {reference:?} was already used for a different credit; use a new reference"
            )));
        }
    }
    txn.commit().await?;
    Ok(Json(load_wallet(&state.db, user.as_str()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_the_three_forms() {
        assert_eq!(parse_expiry(None).unwrap(), None);
        assert_eq!(parse_expiry(Some("")).unwrap(), None);
        assert_eq!(
            parse_expiry(Some("2027-01-02"))
                .unwrap()
                .unwrap()
                .to_rfc3339(),
            "2027-01-02T00:00:00+00:00"
        );
        assert!(parse_expiry(Some("2027-01-02T03:04:05Z"))
            .unwrap()
            .is_some());
        assert!(parse_expiry(Some("tomorrow")).is_err());
        assert!(check_code("ABCD-1234").is_ok());
        assert!(check_code("has space").is_err());
        assert!(check_code(&"x".repeat(65)).is_err());
    }

    fn csv_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "text/csv".parse().unwrap());
        h
    }

    #[test]
    fn an_import_stops_reading_at_the_row_cap() {
        let mut csv = String::from("code,expires_on\n");
        for _ in 0..=IMPORT_MAX_ROWS {
            csv.push_str("a,\n");
        }
        let e = parse_codes(&csv_headers(), &Bytes::from(csv)).unwrap_err();
        assert_eq!(e.status_and_code().1, "PAYLOAD_TOO_LARGE", "{e}");
        let rows = vec![serde_json::json!({"code": "a"}); IMPORT_MAX_ROWS + 1];
        let body = serde_json::to_vec(&serde_json::json!({ "codes": rows })).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let e = parse_codes(&h, &Bytes::from(body)).unwrap_err();
        assert_eq!(e.status_and_code().1, "PAYLOAD_TOO_LARGE", "{e}");
    }

    proptest::proptest! {
        /// Any CSV body is either imported row for row or refused with a
        /// 4xx naming the problem; never a panic.
        #[test]
        fn csv_imports_accept_or_refuse_any_body(body in "code,expires_on\n(\\PC{0,20}(,[0-9T:Z-]{0,12})?\n){0,8}|\\PC{0,60}") {
            match parse_codes(&csv_headers(), &Bytes::from(body.clone())) {
                Ok(rows) => proptest::prop_assert!(rows.len() <= body.lines().count()),
                Err(e) => proptest::prop_assert!(e.status_and_code().0.is_client_error(), "{e}"),
            }
        }
    }
}
