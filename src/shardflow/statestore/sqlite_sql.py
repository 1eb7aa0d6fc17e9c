"""The SQLite state store's schema and statements (one file per table would be noise:
they are read together)."""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, created_at REAL NOT NULL,"
    " version INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tasks (job_id TEXT NOT NULL, task_id TEXT NOT NULL,"
    " status TEXT NOT NULL, version INTEGER NOT NULL, not_before REAL, lease_expires_at REAL,"
    " body BLOB NOT NULL, PRIMARY KEY (job_id, task_id))",
    "CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (job_id, status, task_id)",
    "CREATE TABLE IF NOT EXISTS counters (job_id TEXT NOT NULL, name TEXT NOT NULL,"
    " value INTEGER NOT NULL, PRIMARY KEY (job_id, name))",
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " job_id TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,"
    " detail BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, seq)",
    "CREATE TABLE IF NOT EXISTS task_groups (job_id TEXT NOT NULL, group_id TEXT NOT NULL,"
    " body BLOB NOT NULL, PRIMARY KEY (job_id, group_id))",
    "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, version INTEGER NOT NULL,"
    " body BLOB NOT NULL)",
)

ADD_COUNTER = (
    "INSERT INTO counters (job_id, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (job_id, name) DO UPDATE SET value = value + excluded.value"
)
INSERT_TASK = (
    "INSERT OR IGNORE INTO tasks "
    "(job_id, task_id, status, version, not_before, lease_expires_at, body) VALUES "
    "(:job_id, :task_id, :status, :version, :not_before, :lease_expires_at, :body)"
)
UPDATE_TASK = (
    "UPDATE tasks SET status = :status, version = :version, not_before = :not_before, "
    "lease_expires_at = :lease_expires_at, body = :body "
    "WHERE job_id = :job_id AND task_id = :task_id AND version = :expected"
)
CREATE_JOB = "INSERT OR IGNORE INTO jobs (job_id, created_at, version, body) VALUES (?, ?, ?, ?)"
PUT_GROUP = "INSERT OR REPLACE INTO task_groups (job_id, group_id, body) VALUES (?, ?, ?)"
APPEND_EVENT = "INSERT INTO events (job_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)"
CREATE_BUCKET = "INSERT OR IGNORE INTO buckets (key, version, body) VALUES (?, ?, ?)"
UPDATE_BUCKET = "UPDATE buckets SET version = ?, body = ? WHERE key = ? AND version = ?"
DELETE_BUCKETS = "DELETE FROM buckets WHERE substr(key, 1, ?) = ?"
LATEST_EVENTS = (
    "SELECT seq, at, kind, actor, detail FROM events WHERE job_id = ? ORDER BY seq DESC LIMIT ?"
)
TASK_VERSION = "SELECT version FROM tasks WHERE job_id = ? AND task_id = ?"
LIST_TASKS = "SELECT body FROM tasks WHERE job_id = ? AND task_id > ? ORDER BY task_id LIMIT ?"
LIST_TASKS_BY_STATUS = (
    "SELECT body FROM tasks WHERE job_id = ? AND status = ? AND task_id > ? "
    "ORDER BY task_id LIMIT ?"
)
