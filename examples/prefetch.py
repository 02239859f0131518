"""Files read with overlapped waits, and a prefetch buffer ahead of a bursty consumer."""

import os
import tempfile
import time

import snake


def main():
    with tempfile.TemporaryDirectory() as root:
        for i in range(100):
            with open(os.path.join(root, f"{i:03}.txt"), "w") as f:
                f.write(f"file {i}\n" * (i + 1))
        stream = (
            snake.from_files(os.path.join(root, "*.txt"))  # the sorted paths
            .par_then(snake.read_bytes, limit=16)         # up to 16 reads at once
            .prefetch(256)                                # read ahead while the loop is busy
        )
        files = total = 0
        for data in stream:
            files += 1
            total += len(data)
            if files % 25 == 0:
                time.sleep(0.05)                          # the consumer works in bursts
        print(f"{files} files, {total} bytes")


if __name__ == "__main__":
    main()
