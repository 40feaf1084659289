// First-fit arena allocator: offsets into one workspace for buffers with known lifetimes. The CPU
// executor plans its arena with it (in floats), and the CUDA lowering (bound as
// gastrt._native.ArenaAllocator, in bytes) plans the device arena.
//
// Sizes are rounded up to the alignment (at least one unit). alloc() takes the lowest free
// block that fits (splitting off its front); when none fits, a free block that ends at the
// high-water mark is extended, else the new block starts at the mark. Freed blocks merge with
// their neighbours. The same requests always give the same offsets: programs stay reproducible.
#pragma once
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"

namespace gastrt {

class ArenaAllocator {
 public:
  explicit ArenaAllocator(int64_t alignment) : alignment_(alignment) {
    if (alignment < 1) throw InvalidArgument("arena alignment must be >= 1, got " + std::to_string(alignment));
  }

  int64_t alignment() const { return alignment_; }
  // Size that alloc(size) / release(_, size) actually reserve.
  int64_t rounded(int64_t size) const {
    size = std::max<int64_t>(size, 1);
    return (size + alignment_ - 1) / alignment_ * alignment_;
  }

  int64_t alloc(int64_t size) {
    size = rounded(size);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < size) continue;
      const int64_t off = it->first, rest = it->second - size;
      free_.erase(it);
      if (rest > 0) free_.emplace(off + size, rest);
      return off;
    }
    if (!free_.empty()) {
      auto last = std::prev(free_.end());
      if (last->first + last->second == top_) {  // extend the hole at the top
        const int64_t off = last->first;
        free_.erase(last);
        top_ = off + size;
        return off;
      }
    }
    const int64_t off = top_;
    top_ += size;
    return off;
  }

  // Returns [offset, offset + rounded(size)) to the free blocks; it must lie below the
  // high-water mark and overlap no free block (a double release throws).
  void release(int64_t offset, int64_t size) {
    size = rounded(size);
    if (offset < 0 || offset + size > top_)
      throw InvalidArgument("arena release [" + std::to_string(offset) + ", " + std::to_string(offset + size) +
                            ") is outside the arena [0, " + std::to_string(top_) + ")");
    auto next = free_.lower_bound(offset);
    auto prev = next == free_.begin() ? free_.end() : std::prev(next);
    if ((next != free_.end() && next->first < offset + size) ||
        (prev != free_.end() && prev->first + prev->second > offset))
      throw InvalidArgument("arena release [" + std::to_string(offset) + ", " + std::to_string(offset + size) +
                            ") overlaps a free block");
    int64_t start = offset, end = offset + size;
    if (prev != free_.end() && prev->first + prev->second == start) {
      start = prev->first;
      free_.erase(prev);
    }
    if (next != free_.end() && next->first == end) {
      end += next->second;
      free_.erase(next);
    }
    free_.emplace(start, end - start);
  }

  // High-water mark: the arena size the allocations so far need.
  int64_t top() const { return top_; }
  // Free blocks (offset, size), by offset.
  std::vector<std::pair<int64_t, int64_t>> free_blocks() const {
    return std::vector<std::pair<int64_t, int64_t>>(free_.begin(), free_.end());
  }

 private:
  int64_t alignment_;
  int64_t top_ = 0;
  std::map<int64_t, int64_t> free_;  // offset -> size, never adjacent (merged on release)
};

}  // namespace gastrt
