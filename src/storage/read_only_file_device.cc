#include "storage/read_only_file_device.h"

#include <fmt/format.h>

#include "storage/host_file.h"

namespace lamina::storage {

namespace {

// Owns the file; one thread at a time.
class ReadOnlyFileDevice final : public BlockDevice {
 public:
  explicit ReadOnlyFileDevice(HostFile file) : file_(std::move(file)) {}

  uint64_t size() const override { return file_.size(); }
  bool read_only() const override { return true; }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override {
    return file_.read_at(offset, data);
  }
  Result<void> write(uint64_t, std::span<const std::byte>) override { return refuse(); }
  Result<void> flush() override { return {}; }
  Result<void> discard(uint64_t, uint64_t) override { return refuse(); }

 private:
  std::unexpected<Error> refuse() const {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", file_.name()));
  }
  HostFile file_;
};

}  // namespace

Result<std::unique_ptr<BlockDevice>> open_read_only_file_device(const std::filesystem::path& path,
                                                                bool force_share,
                                                                GrantedFiles* granted) {
  auto file = HostFile::open(path.string(), HostFile::Mode::kRead,
                             {.force_share = force_share, .regular_only = true, .granted = granted});
  if (!file) return fail(file.error());
  return std::unique_ptr<BlockDevice>(std::make_unique<ReadOnlyFileDevice>(std::move(*file)));
}

}  // namespace lamina::storage
