#include "mgmt/inventory.h"
#include "base/json_text.h"

#include <sqlite3.h>

#include <chrono>
#include <memory>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace lamina::mgmt {
namespace {

constexpr const char* kSchema = R"sql(
  PRAGMA journal_mode = WAL;
  PRAGMA synchronous = FULL;
  CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS vms (
    name TEXT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL,
    autostart INTEGER NOT NULL DEFAULT 0,
    on_crash TEXT NOT NULL DEFAULT 'stay',
    created TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS checkpoints (
    vm TEXT NOT NULL,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    state_file TEXT NOT NULL,
    disks TEXT NOT NULL,
    PRIMARY KEY (vm, name)
  );
  CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    vm TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
  );
)sql";

// Keeps the event log bounded: older events beyond this many are pruned on insert.
constexpr int64_t kMaxEvents = 10000;

// One prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* database, const char* sql) {
    if (sqlite3_prepare_v2(database, sql, -1, &statement_, nullptr) != SQLITE_OK) {
      statement_ = nullptr;
    }
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() const { return statement_; }
  explicit operator bool() const { return statement_ != nullptr; }
  void bind(int index, const std::string& text) {
    sqlite3_bind_text(statement_, index, text.c_str(), static_cast<int>(text.size()),
                      SQLITE_TRANSIENT);
  }
  void bind(int index, int64_t value) { sqlite3_bind_int64(statement_, index, value); }
  std::string text(int column) const {
    const auto* value = sqlite3_column_text(statement_, column);
    return value ? reinterpret_cast<const char*>(value) : "";
  }

 private:
  sqlite3_stmt* statement_ = nullptr;
};

Error database_error(sqlite3* database, std::string_view what) {
  return Error(ErrorCode::kIo, fmt::format("inventory: {}: {}", what, sqlite3_errmsg(database)));
}

VmRecord read_vm(const Statement& row) {
  VmRecord record;
  record.name = row.text(0);
  record.uuid = row.text(1);
  record.definition = nlohmann::json::parse(row.text(2), nullptr, false);
  record.autostart = sqlite3_column_int(row.get(), 3) != 0;
  record.on_crash = row.text(4);
  record.created = row.text(5);
  return record;
}

}  // namespace

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", std::chrono::floor<std::chrono::seconds>(now),
                     millis);
}

Result<std::unique_ptr<Inventory>> Inventory::open(const std::filesystem::path& database) {
  sqlite3* handle = nullptr;
  if (sqlite3_open_v2(database.c_str(), &handle,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW,
                      nullptr) != SQLITE_OK) {
    Error error = database_error(handle, database.string());
    sqlite3_close(handle);
    return fail(error);
  }
  std::unique_ptr<Inventory> inventory(new Inventory(handle));
  sqlite3_busy_timeout(handle, 5000);
  if (auto made = inventory->execute(kSchema); !made) return fail(made.error());
  return inventory;
}

Inventory::~Inventory() { sqlite3_close(database_); }

Result<void> Inventory::execute(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(database_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    Error error(ErrorCode::kIo, fmt::format("inventory: {}", message ? message : "error"));
    sqlite3_free(message);
    return fail(error);
  }
  return {};
}

Result<void> Inventory::insert(const VmRecord& record) {
  std::lock_guard lock(mutex_);
  Statement statement(database_,
                      "INSERT INTO vms (name, uuid, definition, autostart, on_crash, created) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  if (!statement) return fail(database_error(database_, "insert"));
  statement.bind(1, record.name);
  statement.bind(2, record.uuid);
  statement.bind(3, json_text(record.definition));
  statement.bind(4, int64_t{record.autostart});
  statement.bind(5, record.on_crash);
  statement.bind(6, record.created);
  const int result = sqlite3_step(statement.get());
  if (result == SQLITE_CONSTRAINT) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("a VM named {} exists", record.name));
  }
  if (result != SQLITE_DONE) return fail(database_error(database_, "insert"));
  return {};
}

Result<void> Inventory::update(const VmRecord& record) {
  std::lock_guard lock(mutex_);
  return update_locked(record);
}

Result<void> Inventory::update_locked(const VmRecord& record) {
  Statement statement(database_,
                      "UPDATE vms SET definition = ?2, autostart = ?3, on_crash = ?4 "
                      "WHERE name = ?1");
  if (!statement) return fail(database_error(database_, "update"));
  statement.bind(1, record.name);
  statement.bind(2, json_text(record.definition));
  statement.bind(3, int64_t{record.autostart});
  statement.bind(4, record.on_crash);
  if (sqlite3_step(statement.get()) != SQLITE_DONE) {
    return fail(database_error(database_, "update"));
  }
  if (sqlite3_changes(database_) == 0) {
    return fail(ErrorCode::kNotFound, fmt::format("no VM named {}", record.name));
  }
  return {};
}

Result<void> Inventory::remove(const std::string& name) {
  std::lock_guard lock(mutex_);
  if (auto begun = execute("BEGIN IMMEDIATE"); !begun) return begun;
  auto removed = [&]() -> Result<void> {
    Statement statement(database_, "DELETE FROM vms WHERE name = ?1");
    if (!statement) return fail(database_error(database_, "delete"));
    statement.bind(1, name);
    if (sqlite3_step(statement.get()) != SQLITE_DONE) {
      return fail(database_error(database_, "delete"));
    }
    if (sqlite3_changes(database_) == 0) {
      return fail(ErrorCode::kNotFound, fmt::format("no VM named {}", name));
    }
    // A VM's checkpoints go with it.
    Statement checkpoints(database_, "DELETE FROM checkpoints WHERE vm = ?1");
    if (!checkpoints) return fail(database_error(database_, "delete"));
    checkpoints.bind(1, name);
    if (sqlite3_step(checkpoints.get()) != SQLITE_DONE) {
      return fail(database_error(database_, "delete"));
    }
    return {};
  }();
  (void)execute(removed ? "COMMIT" : "ROLLBACK");
  return removed;
}

Result<void> Inventory::add_checkpoint(const CheckpointRecord& checkpoint, const VmRecord& vm) {
  std::lock_guard lock(mutex_);
  if (auto begun = execute("BEGIN IMMEDIATE"); !begun) return begun;
  auto added = [&]() -> Result<void> {
    Statement statement(database_,
                        "INSERT INTO checkpoints (vm, name, created, state_file, disks) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!statement) return fail(database_error(database_, "checkpoint"));
    statement.bind(1, checkpoint.vm);
    statement.bind(2, checkpoint.name);
    statement.bind(3, checkpoint.created);
    statement.bind(4, checkpoint.state_file);
    statement.bind(5, json_text(checkpoint.disks));
    const int result = sqlite3_step(statement.get());
    if (result == SQLITE_CONSTRAINT) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{} has a checkpoint named {}", checkpoint.vm, checkpoint.name));
    }
    if (result != SQLITE_DONE) return fail(database_error(database_, "checkpoint"));
    return update_locked(vm);
  }();
  (void)execute(added ? "COMMIT" : "ROLLBACK");
  return added;
}

Result<void> Inventory::remove_checkpoint(const std::string& vm, const std::string& name,
                                          const VmRecord* updated_vm) {
  std::lock_guard lock(mutex_);
  if (auto begun = execute("BEGIN IMMEDIATE"); !begun) return begun;
  auto removed = [&]() -> Result<void> {
    Statement statement(database_, "DELETE FROM checkpoints WHERE vm = ?1 AND name = ?2");
    if (!statement) return fail(database_error(database_, "checkpoint"));
    statement.bind(1, vm);
    statement.bind(2, name);
    if (sqlite3_step(statement.get()) != SQLITE_DONE) {
      return fail(database_error(database_, "checkpoint"));
    }
    if (sqlite3_changes(database_) == 0) {
      return fail(ErrorCode::kNotFound, fmt::format("{} has no checkpoint named {}", vm, name));
    }
    return updated_vm ? update_locked(*updated_vm) : Result<void>{};
  }();
  (void)execute(removed ? "COMMIT" : "ROLLBACK");
  return removed;
}

namespace {

CheckpointRecord read_checkpoint(const Statement& row) {
  return CheckpointRecord{.vm = row.text(0),
                          .name = row.text(1),
                          .created = row.text(2),
                          .state_file = row.text(3),
                          .disks = nlohmann::json::parse(row.text(4), nullptr, false)};
}

}  // namespace

Result<std::optional<CheckpointRecord>> Inventory::find_checkpoint(const std::string& vm,
                                                                   const std::string& name) {
  std::lock_guard lock(mutex_);
  Statement statement(database_,
                      "SELECT vm, name, created, state_file, disks FROM checkpoints "
                      "WHERE vm = ?1 AND name = ?2");
  if (!statement) return fail(database_error(database_, "checkpoint"));
  statement.bind(1, vm);
  statement.bind(2, name);
  const int result = sqlite3_step(statement.get());
  if (result == SQLITE_DONE) return std::optional<CheckpointRecord>{};
  if (result != SQLITE_ROW) return fail(database_error(database_, "checkpoint"));
  return std::optional<CheckpointRecord>{read_checkpoint(statement)};
}

Result<std::vector<CheckpointRecord>> Inventory::checkpoints(const std::string& vm) {
  std::lock_guard lock(mutex_);
  Statement statement(database_,
                      "SELECT vm, name, created, state_file, disks FROM checkpoints "
                      "WHERE vm = ?1 ORDER BY created, name");
  if (!statement) return fail(database_error(database_, "checkpoints"));
  statement.bind(1, vm);
  std::vector<CheckpointRecord> records;
  int result;
  while ((result = sqlite3_step(statement.get())) == SQLITE_ROW) {
    records.push_back(read_checkpoint(statement));
  }
  if (result != SQLITE_DONE) return fail(database_error(database_, "checkpoints"));
  return records;
}

Result<std::optional<VmRecord>> Inventory::find(const std::string& name) {
  std::lock_guard lock(mutex_);
  Statement statement(database_,
                      "SELECT name, uuid, definition, autostart, on_crash, created FROM vms "
                      "WHERE name = ?1");
  if (!statement) return fail(database_error(database_, "select"));
  statement.bind(1, name);
  const int result = sqlite3_step(statement.get());
  if (result == SQLITE_DONE) return std::optional<VmRecord>{};
  if (result != SQLITE_ROW) return fail(database_error(database_, "select"));
  return std::optional<VmRecord>{read_vm(statement)};
}

Result<std::vector<VmRecord>> Inventory::list() {
  std::lock_guard lock(mutex_);
  Statement statement(database_,
                      "SELECT name, uuid, definition, autostart, on_crash, created FROM vms "
                      "ORDER BY name");
  if (!statement) return fail(database_error(database_, "select"));
  std::vector<VmRecord> records;
  int result;
  while ((result = sqlite3_step(statement.get())) == SQLITE_ROW) {
    records.push_back(read_vm(statement));
  }
  if (result != SQLITE_DONE) return fail(database_error(database_, "select"));
  return records;
}

Result<EventRecord> Inventory::add_event(const std::string& vm, const std::string& kind,
                                         const nlohmann::json& detail) {
  std::lock_guard lock(mutex_);
  EventRecord event{.id = 0, .time = utc_now(), .vm = vm, .kind = kind, .detail = detail};
  Statement statement(database_,
                      "INSERT INTO events (time, vm, kind, detail) VALUES (?1, ?2, ?3, ?4)");
  if (!statement) return fail(database_error(database_, "event"));
  statement.bind(1, event.time);
  statement.bind(2, vm);
  statement.bind(3, kind);
  statement.bind(4, json_text(detail));
  if (sqlite3_step(statement.get()) != SQLITE_DONE) return fail(database_error(database_, "event"));
  event.id = sqlite3_last_insert_rowid(database_);
  if (event.id > kMaxEvents) {
    Statement prune(database_, "DELETE FROM events WHERE id <= ?1");
    if (prune) {
      prune.bind(1, event.id - kMaxEvents);
      sqlite3_step(prune.get());
    }
  }
  return event;
}

Result<std::vector<EventRecord>> Inventory::events(int64_t after, const std::string& vm,
                                                   size_t limit) {
  std::lock_guard lock(mutex_);
  Statement statement(database_,
                      "SELECT id, time, vm, kind, detail FROM events WHERE id > ?1 AND "
                      "(?2 = '' OR vm = ?2) ORDER BY id LIMIT ?3");
  if (!statement) return fail(database_error(database_, "events"));
  statement.bind(1, after);
  statement.bind(2, vm);
  statement.bind(3, static_cast<int64_t>(limit));
  std::vector<EventRecord> events;
  int result;
  while ((result = sqlite3_step(statement.get())) == SQLITE_ROW) {
    events.push_back({.id = sqlite3_column_int64(statement.get(), 0),
                      .time = statement.text(1),
                      .vm = statement.text(2),
                      .kind = statement.text(3),
                      .detail = nlohmann::json::parse(statement.text(4), nullptr, false)});
  }
  if (result != SQLITE_DONE) return fail(database_error(database_, "events"));
  return events;
}

}  // namespace lamina::mgmt
