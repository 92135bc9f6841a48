//! Command bytes and their names.

pub(crate) const QUIT: u8 = 0x01;
pub(crate) const INIT_DB: u8 = 0x02;
pub(crate) const QUERY: u8 = 0x03;
pub(crate) const FIELD_LIST: u8 = 0x04;
pub(crate) const PING: u8 = 0x0e;
pub(crate) const CHANGE_USER: u8 = 0x11;
pub(crate) const BINLOG_DUMP: u8 = 0x12;
pub(crate) const STMT_PREPARE: u8 = 0x16;
pub(crate) const STMT_EXECUTE: u8 = 0x17;
pub(crate) const STMT_SEND_LONG_DATA: u8 = 0x18;
pub(crate) const STMT_CLOSE: u8 = 0x19;
pub(crate) const STMT_RESET: u8 = 0x1a;
pub(crate) const STMT_FETCH: u8 = 0x1c;
pub(crate) const BINLOG_DUMP_GTID: u8 = 0x1e;
pub(crate) const RESET_CONNECTION: u8 = 0x1f;

/// The operation name of a command that is not a statement: `COM_<name>` (`PING` and
/// `INIT_DB` as they are; unknown bytes `COM_UNKNOWN`).
pub fn name(c: u8) -> &'static str {
    match c {
        0x00 => "COM_SLEEP",
        QUIT => "COM_QUIT",
        INIT_DB => "INIT_DB",
        QUERY => "COM_QUERY",
        FIELD_LIST => "COM_FIELD_LIST",
        0x05 => "COM_CREATE_DB",
        0x06 => "COM_DROP_DB",
        0x07 => "COM_REFRESH",
        0x08 => "COM_SHUTDOWN",
        0x09 => "COM_STATISTICS",
        0x0a => "COM_PROCESS_INFO",
        0x0b => "COM_CONNECT",
        0x0c => "COM_PROCESS_KILL",
        0x0d => "COM_DEBUG",
        PING => "PING",
        0x0f => "COM_TIME",
        0x10 => "COM_DELAYED_INSERT",
        CHANGE_USER => "COM_CHANGE_USER",
        BINLOG_DUMP => "COM_BINLOG_DUMP",
        0x13 => "COM_TABLE_DUMP",
        0x14 => "COM_CONNECT_OUT",
        0x15 => "COM_REGISTER_SLAVE",
        STMT_PREPARE => "PREPARE",
        STMT_EXECUTE => "EXECUTE",
        STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
        STMT_CLOSE => "COM_STMT_CLOSE",
        STMT_RESET => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        STMT_FETCH => "COM_STMT_FETCH",
        0x1d => "COM_DAEMON",
        BINLOG_DUMP_GTID => "COM_BINLOG_DUMP_GTID",
        RESET_CONNECTION => "COM_RESET_CONNECTION",
        0x20 => "COM_CLONE",
        0xfa => "COM_STMT_BULK_EXECUTE",
        _ => "COM_UNKNOWN",
    }
}
