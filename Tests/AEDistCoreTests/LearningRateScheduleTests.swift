import AEDistCore
import XCTest

final class LearningRateScheduleTests: XCTestCase {
    func schedule(_ kind: ScheduleConfig.LearningRateSchedule, warmup: Double = 0) -> ScheduleConfig {
        var schedule = ScheduleConfig()
        schedule.lrSchedule = kind
        schedule.epochs = 10
        schedule.warmupEpochs = warmup
        schedule.stepEpochs = 3
        schedule.gamma = 0.5
        schedule.minLR = 0.01
        return schedule
    }

    func testConstantStepAndCosine() {
        XCTAssertEqual(schedule(.constant).learningRate(base: 1, epoch: 7.5), 1)
        let step = schedule(.step)
        XCTAssertEqual(step.learningRate(base: 1, epoch: 2.9), 1)
        XCTAssertEqual(step.learningRate(base: 1, epoch: 3.0), 0.5)
        XCTAssertEqual(step.learningRate(base: 1, epoch: 9.5), 0.125)
        let cosine = schedule(.cosine)
        XCTAssertEqual(cosine.learningRate(base: 1, epoch: 0), 1, accuracy: 1e-12)
        XCTAssertEqual(cosine.learningRate(base: 1, epoch: 5), 0.01 + 0.99 * 0.5, accuracy: 1e-12)
        XCTAssertEqual(cosine.learningRate(base: 1, epoch: 10), 0.01, accuracy: 1e-12)
    }

    func testLinearWarmupThenTheSchedule() {
        let warm = schedule(.cosine, warmup: 2)
        XCTAssertEqual(warm.learningRate(base: 1, epoch: 0.5), 0.25, accuracy: 1e-12)
        XCTAssertEqual(warm.learningRate(base: 1, epoch: 1.0), 0.5, accuracy: 1e-12)
        XCTAssertEqual(warm.learningRate(base: 1, epoch: 2.0), 1, accuracy: 1e-12)  // cosine starts after warm-up
        XCTAssertEqual(warm.learningRate(base: 1, epoch: 6.0), 0.01 + 0.99 * 0.5, accuracy: 1e-12)
        XCTAssertGreaterThan(warm.learningRate(base: 1, epoch: 0), 0, "the first step must not have rate 0")
    }
}
