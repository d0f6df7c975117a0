/// Python's `str.isspace()` for one scalar: bidi classes WS, B, S or category Zs.
@inlinable
public func isPythonWhitespace(_ s: Unicode.Scalar) -> Bool {
    switch s.value {
    case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
        return true
    default:
        return false
    }
}

/// Python's `str.strip()`: removes leading/trailing chars for which `str.isspace()` is true.
public func pythonStrip(_ s: String) -> String {
    let scalars = s.unicodeScalars
    guard let first = scalars.firstIndex(where: { !isPythonWhitespace($0) }) else { return "" }
    // `first` exists, so a last non-space scalar exists too.
    let last = scalars.lastIndex(where: { !isPythonWhitespace($0) }) ?? first
    if first == scalars.startIndex && scalars.index(after: last) == scalars.endIndex { return s }
    return String(scalars[first...last])
}
