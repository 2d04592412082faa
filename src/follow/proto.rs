//! Pika's replication messages (`src/pika_inner_message.proto` in Pika's source, proto2, the
//! same in 3.5 and 4.0 but for `db_instance_num`, which only 4.0 sends): only the messages a
//! binlog follower uses, declared by hand for prost's derive (no protoc at build time).
//!
//! proto2 `required` fields are always encoded, zero or not: Pika's master drops a request that
//! lacks one (and closes the connection), so a session id 0 or an offset 0 must be on the wire.

#![allow(clippy::derive_partial_eq_without_eq)]

use prost::Message;

/// `InnerMessage.Type`.
pub const TYPE_META_SYNC: i32 = 1;
pub const TYPE_TRY_SYNC: i32 = 2;
pub const TYPE_BINLOG_SYNC: i32 = 4;

/// `InnerMessage.StatusCode`.
pub const CODE_OK: i32 = 1;
pub const CODE_ERROR: i32 = 2;
pub const CODE_OTHER: i32 = 3;

/// `InnerResponse.TrySync.ReplyCode`.
pub const TRY_OK: i32 = 1;
pub const TRY_PURGED: i32 = 2;
pub const TRY_LARGER: i32 = 3;
pub const TRY_ERROR: i32 = 4;

#[derive(Clone, PartialEq, Message)]
pub struct BinlogOffset {
    #[prost(uint32, required, tag = "1")]
    pub filenum: u32,
    #[prost(uint64, required, tag = "2")]
    pub offset: u64,
    #[prost(uint32, optional, tag = "3")]
    pub term: Option<u32>,
    #[prost(uint64, optional, tag = "4")]
    pub index: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Node {
    #[prost(string, required, tag = "1")]
    pub ip: String,
    #[prost(int32, required, tag = "2")]
    pub port: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Slot {
    #[prost(string, required, tag = "1")]
    pub db_name: String,
    #[prost(uint32, required, tag = "2")]
    pub slot_id: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetaSyncRequest {
    #[prost(message, required, tag = "1")]
    pub node: Node,
    #[prost(string, optional, tag = "2")]
    pub auth: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrySyncRequest {
    #[prost(message, required, tag = "1")]
    pub node: Node,
    #[prost(message, required, tag = "2")]
    pub slot: Slot,
    #[prost(message, required, tag = "3")]
    pub binlog_offset: BinlogOffset,
}

#[derive(Clone, PartialEq, Message)]
pub struct BinlogSyncRequest {
    #[prost(message, required, tag = "1")]
    pub node: Node,
    #[prost(string, required, tag = "2")]
    pub db_name: String,
    #[prost(uint32, required, tag = "3")]
    pub slot_id: u32,
    #[prost(message, required, tag = "4")]
    pub ack_range_start: BinlogOffset,
    #[prost(message, required, tag = "5")]
    pub ack_range_end: BinlogOffset,
    #[prost(int32, required, tag = "6")]
    pub session_id: i32,
    #[prost(bool, required, tag = "7")]
    pub first_send: bool,
}

/// `InnerMessage.InnerRequest` (the fields a follower sends).
#[derive(Clone, PartialEq, Message)]
pub struct InnerRequest {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub meta_sync: Option<MetaSyncRequest>,
    #[prost(message, optional, tag = "3")]
    pub try_sync: Option<TrySyncRequest>,
    #[prost(message, optional, tag = "5")]
    pub binlog_sync: Option<BinlogSyncRequest>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DbInfo {
    #[prost(string, required, tag = "1")]
    pub db_name: String,
    #[prost(int32, required, tag = "2")]
    pub slot_num: i32,
    /// Pika 4.0 only.
    #[prost(int32, optional, tag = "3")]
    pub db_instance_num: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetaSyncResponse {
    #[prost(bool, required, tag = "1")]
    pub classic_mode: bool,
    #[prost(message, repeated, tag = "2")]
    pub dbs_info: Vec<DbInfo>,
    #[prost(string, required, tag = "3")]
    pub run_id: String,
    #[prost(string, optional, tag = "4")]
    pub replication_id: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrySyncResponse {
    #[prost(int32, required, tag = "1")]
    pub reply_code: i32,
    #[prost(message, required, tag = "2")]
    pub slot: Slot,
    #[prost(message, optional, tag = "3")]
    pub binlog_offset: Option<BinlogOffset>,
    #[prost(int32, optional, tag = "4")]
    pub session_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BinlogSyncResponse {
    #[prost(message, required, tag = "1")]
    pub slot: Slot,
    #[prost(message, required, tag = "2")]
    pub binlog_offset: BinlogOffset,
    #[prost(bytes = "vec", required, tag = "3")]
    pub binlog: Vec<u8>,
    #[prost(int32, required, tag = "4")]
    pub session_id: i32,
}

/// `InnerMessage.InnerResponse` (the fields a follower reads; others are skipped).
#[derive(Clone, PartialEq, Message)]
pub struct InnerResponse {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(int32, required, tag = "2")]
    pub code: i32,
    #[prost(string, optional, tag = "3")]
    pub reply: Option<String>,
    #[prost(message, optional, tag = "4")]
    pub meta_sync: Option<MetaSyncResponse>,
    #[prost(message, optional, tag = "6")]
    pub try_sync: Option<TrySyncResponse>,
    #[prost(message, repeated, tag = "7")]
    pub binlog_sync: Vec<BinlogSyncResponse>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Required fields that hold zero are still encoded (Pika's parser rejects a message that
    /// lacks one): a first BinlogSync of session 0 from offset 0 0.
    #[test]
    fn required_zeros_are_on_the_wire() {
        let zero = BinlogOffset {
            filenum: 0,
            offset: 0,
            term: None,
            index: None,
        };
        let req = InnerRequest {
            r#type: TYPE_BINLOG_SYNC,
            meta_sync: None,
            try_sync: None,
            binlog_sync: Some(BinlogSyncRequest {
                node: Node {
                    ip: "127.0.0.1".into(),
                    port: 0,
                },
                db_name: "db0".into(),
                slot_id: 0,
                ack_range_start: zero.clone(),
                ack_range_end: zero,
                session_id: 0,
                first_send: false,
            }),
        };
        let b = req.encode_to_vec();
        // type=4; then field 5 (binlog_sync), whose body has every field 1..7.
        assert_eq!(&b[..2], &[0x08, 0x04]);
        let body = BinlogSyncRequest::decode(&b[4..]).unwrap();
        assert_eq!(body.session_id, 0);
        let mut tags: Vec<u8> = Vec::new();
        let mut i = 4;
        while i < b.len() {
            tags.push(b[i] >> 3);
            let wire = b[i] & 7;
            i += 1;
            match wire {
                0 => {
                    while b[i] & 0x80 != 0 {
                        i += 1;
                    }
                    i += 1;
                }
                2 => {
                    let n = b[i] as usize;
                    i += 1 + n;
                }
                w => panic!("wire type {w}"),
            }
        }
        assert_eq!(tags, [1, 2, 3, 4, 5, 6, 7]);
        // And the zero offset inside carries both of its required fields.
        let zero = BinlogOffset::decode(&[0x08, 0x00, 0x10, 0x00][..]).unwrap();
        assert_eq!((zero.filenum, zero.offset), (0, 0));
        assert_eq!(
            BinlogOffset {
                filenum: 0,
                offset: 0,
                term: None,
                index: None
            }
            .encode_to_vec(),
            vec![0x08, 0x00, 0x10, 0x00]
        );
    }

    /// A 3.5 master's MetaSync reply has no `db_instance_num`; a 4.0 master's has it.
    #[test]
    fn meta_sync_replies_of_both_versions_decode() {
        let r = InnerResponse {
            r#type: TYPE_META_SYNC,
            code: CODE_OK,
            reply: None,
            meta_sync: Some(MetaSyncResponse {
                classic_mode: true,
                dbs_info: vec![DbInfo {
                    db_name: "db0".into(),
                    slot_num: 1,
                    db_instance_num: None,
                }],
                run_id: "r".into(),
                replication_id: None,
            }),
            try_sync: None,
            binlog_sync: vec![],
        };
        let back = InnerResponse::decode(&r.encode_to_vec()[..]).unwrap();
        assert_eq!(back, r);
    }
}
