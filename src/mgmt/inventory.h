#pragma once
// Inventory: laminad's persistent state in one SQLite database (STATE_DIR/inventory.db): VM
// definitions with their uuid, autostart and on-crash policy, the state each VM was last seen
// in, and an event log. Every change is one transaction, so a failed request leaves nothing
// half-made.
//
// Ownership: owns the connection. Thread-safety: all calls serialize on one mutex.

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

struct sqlite3;

namespace lamina::mgmt {

struct VmRecord {
  std::string name;
  std::string uuid;
  nlohmann::json definition;  // machine/vm_definition.h
  bool autostart = false;
  std::string on_crash = "stay";  // "stay" or "restart"
  std::string created;             // ISO 8601, UTC
};

struct EventRecord {
  int64_t id = 0;
  std::string time;  // ISO 8601, UTC, milliseconds
  std::string vm;    // empty for daemon-wide events
  std::string kind;  // "created", "started", "stopped", "deleted", ...
  nlohmann::json detail;
};

// A checkpoint (Hyper-V's name for a snapshot) of one VM: the machine state file (empty for a
// VM that was stopped when it was taken) and, per disk of the definition at that moment, the
// image frozen by it (null for a read-only disk): the VM's disk then became a differencing child
// of it.
struct CheckpointRecord {
  std::string vm;
  std::string name;
  std::string created;  // ISO 8601, UTC
  std::string state_file;
  nlohmann::json disks = nlohmann::json::array();
};

class Inventory {
 public:
  static Result<std::unique_ptr<Inventory>> open(const std::filesystem::path& database);
  ~Inventory();
  Inventory(const Inventory&) = delete;
  Inventory& operator=(const Inventory&) = delete;

  // kInvalidArgument "exists" when the name is taken (the caller maps it to 409).
  [[nodiscard]] Result<void> insert(const VmRecord& record);
  [[nodiscard]] Result<void> update(const VmRecord& record);
  // kNotFound when there is no such VM.
  [[nodiscard]] Result<void> remove(const std::string& name);
  [[nodiscard]] Result<std::optional<VmRecord>> find(const std::string& name);
  [[nodiscard]] Result<std::vector<VmRecord>> list();

  // Checkpoints. Adding and removing one changes the VM's definition (its disks) in the same
  // transaction; `vm` is the record to store, or null to leave the VM as it is.
  [[nodiscard]] Result<void> add_checkpoint(const CheckpointRecord& checkpoint, const VmRecord& vm);
  [[nodiscard]] Result<void> remove_checkpoint(const std::string& vm, const std::string& name,
                                               const VmRecord* updated_vm);
  [[nodiscard]] Result<std::optional<CheckpointRecord>> find_checkpoint(const std::string& vm,
                                                                        const std::string& name);
  // Oldest first.
  [[nodiscard]] Result<std::vector<CheckpointRecord>> checkpoints(const std::string& vm);

  // Appends an event and returns it with its id and time.
  Result<EventRecord> add_event(const std::string& vm, const std::string& kind,
                                const nlohmann::json& detail);
  // Events with id > after (optionally of one VM), oldest first, at most `limit`.
  [[nodiscard]] Result<std::vector<EventRecord>> events(int64_t after, const std::string& vm,
                                                        size_t limit);

 private:
  explicit Inventory(sqlite3* database) : database_(database) {}
  Result<void> execute(const char* sql);
  Result<void> update_locked(const VmRecord& record);

  std::mutex mutex_;
  sqlite3* database_;
};

// "2026-12-06T14:03:07.123Z"
std::string utc_now();

}  // namespace lamina::mgmt
