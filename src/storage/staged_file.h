#pragma once
// StagedFile: the "nothing half-written" rule for new images. A command writes its output under
// a temporary name in the destination's folder and renames it into place only when complete;
// if it fails or is interrupted, the destructor removes the temporary file.
//
// Ownership: owns the temporary path until commit(). Thread-safety: one thread.

#include <string>

#include "base/error.h"

namespace lamina::storage {

class StagedFile {
 public:
  // Fails when destination exists and overwrite is false (naming --force), before any work.
  static Result<StagedFile> prepare(const std::string& destination, bool overwrite);

  StagedFile(StagedFile&& other) noexcept;
  StagedFile& operator=(StagedFile&&) = delete;
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;
  ~StagedFile();

  // Where to write; the file does not exist yet.
  const std::string& temporary_path() const { return temporary_; }
  // Makes the temporary file durable and renames it to the destination. Replacing an existing
  // file needs its writer's lock (storage/host_file.h): this process must have closed it, and
  // no other may hold it.
  [[nodiscard]] Result<void> commit();

 private:
  StagedFile(std::string destination, std::string temporary, bool overwrite)
      : destination_(std::move(destination)), temporary_(std::move(temporary)),
        overwrite_(overwrite) {}

  std::string destination_;
  std::string temporary_;
  bool overwrite_ = false;
  bool committed_ = true;  // a moved-from object owns nothing
};

// The error for an existing destination: names the file and --force.
Error destination_exists(const std::string& path);

}  // namespace lamina::storage
