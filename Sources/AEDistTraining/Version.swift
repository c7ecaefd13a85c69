public enum AEDistVersion { public static let string = "0.1.0" }
