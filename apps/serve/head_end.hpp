#pragma once
// Where a request's line and headers end, for tessera-serve's connection handling (http.hpp):
// the watcher that reads a waiting connection's head and the stream that caps its size both
// scan with it.

#include <cstddef>

namespace tessera::serve {

// Finds where a request's line and headers end: at their first empty line (CRLF CRLF, LF LF
// or a mix: httplib reads lines ending in LF, a CR before it dropped). Fed the bytes as they
// arrive, in pieces of any size; it carries its state from one piece to the next.
class HeadEnd {
 public:
  // Scans the next bytes: how many of them belong to the head (all of them until it ends,
  // then up to and with the LF that ends it; none once it has ended).
  std::size_t scan(const char* data, std::size_t size) {
    std::size_t i = 0;
    for (; i < size && !ended_; ++i) {
      if (data[i] == '\n') {
        ended_ = line_empty_;
        line_empty_ = true;
      } else if (data[i] != '\r') {
        line_empty_ = false;
      }
    }
    return i;
  }
  bool ended() const { return ended_; }

 private:
  bool line_empty_ = false;  // the line read so far is empty (or only a CR); not at the start:
                             // an empty first line ends no head
  bool ended_ = false;
};

}  // namespace tessera::serve
