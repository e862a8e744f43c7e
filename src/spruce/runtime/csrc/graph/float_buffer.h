// Long-lived float buffers (the activation arena, big constant weights):
// 64-byte aligned and zero-filled. Buffers of 2 MiB or more are 2 MiB aligned
// and ask Linux for transparent huge pages, so a buffer read once per run
// costs one TLB entry per 2 MiB instead of 512. SPRUCE_ENGINE_NO_HUGEPAGES=1
// keeps 4 KiB pages.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace spruce {

class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(size_t floats) : size_(floats) {
    constexpr size_t kHugePage = size_t{2} << 20;
    size_t bytes = std::max<size_t>(floats, 1) * sizeof(float);
    size_t align = 64;
    bool huge = false;
#ifdef __linux__
    const char* off = std::getenv("SPRUCE_ENGINE_NO_HUGEPAGES");
    huge = bytes >= kHugePage && (off == nullptr || std::strcmp(off, "1") != 0);
#endif
    if (huge) align = kHugePage;
    bytes = (bytes + align - 1) / align * align;
    void* p = std::aligned_alloc(align, bytes);
    if (p == nullptr) throw std::bad_alloc();
#ifdef __linux__
    if (huge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
#endif
    std::memset(p, 0, bytes);
    data_.reset(static_cast<float*>(p));
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float[], Free> data_;
  size_t size_ = 0;
};

}  // namespace spruce
