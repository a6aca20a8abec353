"""A tiny VT100 screen for tests that drive a curses program in a pseudo-terminal (TERM=vt100).

It keeps what a person would see: the text at each position, after the cursor
moves, erasures, tabs and line feeds the program sent; attributes are dropped.
"""

import re

_CSI = re.compile(rb"\x1b\[([?0-9;]*)([@-~])")


class Screen:
    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols
        self.grid = [[" "] * cols for _ in range(rows)]
        self.row = self.col = 0
        self.saved = (0, 0)
        self.pending = b""

    def text(self):
        return "\n".join("".join(line).rstrip() for line in self.grid)

    def feed(self, data):
        data = self.pending + data
        self.pending = b""
        i = 0
        while i < len(data):
            byte = data[i]
            if byte == 0x1B:
                if i + 1 >= len(data):
                    self.pending = data[i:]
                    return
                follower = data[i + 1]
                if follower == ord("["):
                    match = _CSI.match(data, i)
                    if match is None:
                        if len(data) - i < 32:
                            self.pending = data[i:]
                            return
                        i += 2
                        continue
                    self._csi(match.group(1).decode(), match.group(2).decode())
                    i = match.end()
                    continue
                if follower in b"()":  # charset designation: ESC ( B
                    if i + 2 >= len(data):
                        self.pending = data[i:]
                        return
                    i += 3
                    continue
                if follower == ord("7"):
                    self.saved = (self.row, self.col)
                elif follower == ord("8"):
                    self.row, self.col = self.saved
                elif follower == ord("M"):
                    self.row = max(0, self.row - 1)
                i += 2
                continue
            if byte == 0x0D:
                self.col = 0
            elif byte == 0x0A:
                self._line_feed()
            elif byte == 0x08:
                self.col = max(0, self.col - 1)
            elif byte == 0x09:
                self.col = min(self.cols - 1, (self.col // 8 + 1) * 8)
            elif byte >= 0x20 and byte not in (0x7F,):
                if self.col >= self.cols:
                    self.col = 0
                    self._line_feed()
                self.grid[self.row][self.col] = chr(byte)
                self.col += 1
            i += 1

    def _line_feed(self):
        if self.row == self.rows - 1:
            self.grid.pop(0)
            self.grid.append([" "] * self.cols)
        else:
            self.row += 1

    def _csi(self, params, final):
        private = params.startswith("?")
        numbers = [int(p) if p else 0 for p in params.lstrip("?").split(";")] if params.lstrip("?") else []
        first = numbers[0] if numbers else 0
        count = max(1, first)
        if private or final in "mrhlnqt":
            return
        if final in "Hf":
            row = numbers[0] if len(numbers) > 0 and numbers[0] else 1
            col = numbers[1] if len(numbers) > 1 and numbers[1] else 1
            self.row, self.col = min(self.rows, row) - 1, min(self.cols, col) - 1
        elif final == "A":
            self.row = max(0, self.row - count)
        elif final == "B":
            self.row = min(self.rows - 1, self.row + count)
        elif final == "C":
            self.col = min(self.cols - 1, self.col + count)
        elif final == "D":
            self.col = max(0, self.col - count)
        elif final == "K":
            line = self.grid[self.row]
            span = {0: range(self.col, self.cols), 1: range(0, self.col + 1), 2: range(self.cols)}.get(first, ())
            for c in span:
                line[c] = " "
        elif final == "J":
            if first == 2:
                self.grid = [[" "] * self.cols for _ in range(self.rows)]
            else:
                self._csi("0", "K")
                rows = range(self.row + 1, self.rows) if first == 0 else range(0, self.row)
                for r in rows:
                    self.grid[r] = [" "] * self.cols
        elif final == "X":
            for c in range(self.col, min(self.cols, self.col + count)):
                self.grid[self.row][c] = " "
        elif final == "P":
            line = self.grid[self.row]
            del line[self.col : self.col + count]
            line.extend([" "] * (self.cols - len(line)))
        elif final == "@":
            line = self.grid[self.row]
            line[self.col : self.col] = [" "] * count
            del line[self.cols :]
