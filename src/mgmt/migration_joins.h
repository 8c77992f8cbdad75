#pragma once
// MigrationJoins: the incoming migrations further connections may join, by the join id each
// migration's kAccept gave its source (16 random bytes as hex: the id, besides the mutual TLS
// every connection to the listener has, binds a lane to its migration). An entry lives as
// long as its migration; a connection holding it keeps the migration's memory alive, never
// the migration itself going on.
//
// Thread-safety: every method from any thread.

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace lamina::mgmt {

class IncomingMigration;

class MigrationJoins {
 public:
  void add(const std::string& id, const std::shared_ptr<IncomingMigration>& migration) {
    std::lock_guard lock(mutex_);
    joins_[id] = migration;
  }
  void remove(const std::string& id) {
    std::lock_guard lock(mutex_);
    joins_.erase(id);
  }
  // The migration with this id, or null (unknown, or over).
  std::shared_ptr<IncomingMigration> find(const std::string& id) {
    std::lock_guard lock(mutex_);
    auto found = joins_.find(id);
    return found == joins_.end() ? nullptr : found->second.lock();
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::weak_ptr<IncomingMigration>> joins_;
};

}  // namespace lamina::mgmt
