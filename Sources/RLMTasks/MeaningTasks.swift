import Foundation
import RLM

/// Meaning: support tickets where 4–8 share a keyword, and only one is about what the question means (said in other
/// words). Filler tickets never use the keyword nor the scenario's related words.
enum MeaningTaskGenerator {
    struct Scenario {
        var keyword: String
        /// Words filler never uses (lowercase substrings).
        var banned: [String]
        var questions: [String]
        var subjects: [String]
        var targets: [String]
        var distractors: [String]
    }

    static let scenarios: [Scenario] = [
        Scenario(
            keyword: "invoice",
            banned: ["invoice", "bill", "charg", "debit", "pay", "paid", "refund", "twice", "money"],
            questions: [
                "Which ticket reports that the customer was charged twice for the same invoice?",
                "One ticket says a single invoice was paid two times. Which ticket is it?",
            ],
            subjects: ["Invoice {inv}", "Question about an invoice", "Invoice issue"],
            targets: [
                "I settled invoice {inv} by card on Monday, and my bank statement shows the same amount leaving my "
                    + "account on two separate lines. Please return the extra one.",
                "The money for invoice {inv} came out of our account, and then the identical sum came out again the "
                    + "next morning. We only owe it once.",
            ],
            distractors: [
                "Invoice {inv} lists a VAT number that belongs to our old office. Could you issue a corrected copy?",
                "I received the email for invoice {inv} twice, but only one payment was taken, so that part is fine. "
                    + "I just need the PDF in English.",
                "Could you resend invoice {inv}? The link in the email has expired.",
                "Invoice {inv} is higher than the quote we accepted; the shipping fee seems to be charged on top.",
                "Please put our purchase order number on invoice {inv}, our accounts team will not pay it otherwise.",
                "We paid invoice {inv} late because of a bank holiday. Is there a late fee, and can it be waived?",
                "Invoice {inv} was charged to a card that expired last month. Which card will you try next?",
                "I want to pay invoice {inv} in two instalments. Is that possible?",
            ]),
        Scenario(
            keyword: "package",
            banned: ["package", "parcel", "courier", "deliver", "address", "door", "tracking", "neighbo", "house"],
            questions: [
                "Which ticket says the package was left at the wrong address?",
                "In which ticket did the customer's package end up at somebody else's home?",
            ],
            subjects: ["Package problem", "Where is my package?", "Package for order {ord}"],
            targets: [
                "Tracking shows my package as delivered at 14:02, but the photo is of a front door that is not mine. "
                    + "I live at number 41; the picture shows number 14.",
                "My package ended up at the flat across the street. A stranger messaged me a photo of the label with "
                    + "my name on it.",
            ],
            distractors: [
                "My package arrived with a dent in one corner and the lamp inside is cracked.",
                "The package is three days late and tracking has not moved since Monday.",
                "Can I change the address for my package? It has not shipped yet.",
                "The package came on time but one of the two items was missing.",
                "My package went back to the sender because nobody was home. Can you send it again?",
                "I would like to collect my package from a locker instead of having it brought home.",
                "The package was left at my own door without a signature, although I paid for signed delivery.",
                "Is there a way to combine two orders into one package to save on shipping?",
            ]),
        Scenario(
            keyword: "password",
            banned: ["password", "sign", "login", "log in", "account", "access", "hack", "stranger", "someone"],
            questions: [
                "Which ticket reports that someone else got into the customer's account?",
                "Which ticket describes an account being used by somebody other than its owner?",
            ],
            subjects: ["Password question", "Problem with my password", "Account and password"],
            targets: [
                "Last night I got a sign-in notice from a city I have never visited, and this morning my saved "
                    + "shipping address was a stranger's. I have changed my password since.",
                "There are two orders in my history that I did not place, both sent to an address I do not know. My "
                    + "password was the same as on another site, I admit.",
            ],
            distractors: [
                "I forgot my password and the reset email never arrives, not even in spam.",
                "The password rules are strange: the form rejects anything longer than 20 characters.",
                "How do I change my password from the mobile app?",
                "My account was locked after I typed the wrong password three times. Please unlock it.",
                "The password reset link says it has expired although I clicked it within a minute.",
                "Can I sign in without a password, with a code by email instead?",
                "The browser does not offer to save my password on your checkout page.",
                "Is there a way to see when I last changed my password?",
            ]),
        Scenario(
            keyword: "subscription",
            banned: ["subscri", "plan", "renew", "charg", "cancel", "pay", "fee", "month", "bill"],
            questions: [
                "Which ticket reports a charge that came after the subscription had already been cancelled?",
                "Which ticket says the customer kept being billed after ending the subscription?",
            ],
            subjects: ["Subscription question", "About my subscription", "My subscription"],
            targets: [
                "I ended my subscription on the 3rd and got the confirmation email, yet another monthly payment left "
                    + "my account this week.",
                "My subscription was closed in March, I have the screenshot, but the April fee was still taken from "
                    + "my card.",
            ],
            distractors: [
                "Please cancel my subscription at the end of this billing period.",
                "I would like to upgrade my subscription to the yearly plan.",
                "The subscription price went up by two euros; was I told about this?",
                "Can I pause my subscription for the summer instead of cancelling it?",
                "My subscription renewed today as expected; I only need a receipt with our company name.",
                "I was charged twice for my subscription this month, and it is still active, as it should be.",
                "Does the subscription include the mobile app, or is that extra?",
                "I cancelled one order but want to keep the subscription running.",
            ]),
    ]

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let scenario = rng.pick(scenarios)
        let distractorCount = rng.int(in: 3...7)
        var bodies = [rng.pick(scenario.targets)]
        bodies += rng.shuffled(scenario.distractors).prefix(distractorCount)
        var tickets = [(subject: String, body: String)]()
        var bytes = 0
        let allowed = TicketFiller.allowed(avoiding: scenario.banned)
        // A ticket's header takes 78 bytes and its subject; a keyword ticket about 260 in all.
        while bytes < sizeBytes - bodies.count * 260 {
            let ticket = (rng.pick(allowed.subjects), TicketFiller.body(rng: &rng, sentences: allowed.sentences))
            bytes += ticket.0.utf8.count + ticket.1.utf8.count + 78
            tickets.append(ticket)
        }
        // Keyword tickets at random places; the target's position is remembered.
        var targetIndex = 0
        for (index, body) in bodies.enumerated() {
            let filled = body.replacingOccurrences(of: "{inv}", with: "INV-\(rng.int(in: 10_000...99_999))")
            let subject = rng.pick(scenario.subjects).replacingOccurrences(
                of: "{inv}", with: "INV-\(rng.int(in: 10_000...99_999))"
            ).replacingOccurrences(of: "{ord}", with: "ORD-\(rng.int(in: 10_000...99_999))")
            let position = rng.int(in: 0...tickets.count)
            tickets.insert((subject, filled), at: position)
            if index == 0 {
                targetIndex = position
            } else if position <= targetIndex {
                targetIndex += 1
            }
        }
        var number = rng.int(in: 50_000...90_000)
        let startDay = LogGenerator.daysFromCivil(year: 2026, month: 3, day: 1)
        var documents = [String]()
        var answer = ""
        for (index, ticket) in tickets.enumerated() {
            number += rng.int(in: 1...4)
            let id = "TCK-\(number)"
            if index == targetIndex { answer = id }
            documents.append(
                "### \(id)\nTicket \(id)\nOpened: \(LogGenerator.date(days: startDay + rng.int(in: 0...200)))\n"
                    + "Customer: C-\(AggregationTaskGenerator.pad4(rng.int(in: 1...9999)))\nSubject: \(ticket.subject)\n"
                    + "\(ticket.body)\n")
        }
        let query = rng.pick(scenario.questions) + " Answer with the ticket id."
        return GeneratedTask(query: query, context: .documents(documents), answer: answer, answerKind: .text)
    }
}

/// Meaning count: product reviews, 5–10 of which mention a topic (praise, complaints and neutral remarks, worded so
/// that keyword heuristics fail: complaints without negative words, praise with "not" and "no complaints"), and "how
/// many of them complain about it?". Each review is short and clear to a human reader.
enum MeaningCountTaskGenerator {
    struct Topic {
        var keyword: String
        var phrase: String
        /// Products a review of this topic can be about.
        var products: [String]
        var banned: [String]
        var complaints: [String]
        var praise: [String]
        var neutral: [String]
    }

    static let topics: [Topic] = [
        Topic(
            keyword: "battery", phrase: "the battery",
            products: ["wireless earbuds", "bike light", "headlamp", "smartwatch", "fitness tracker"],
            banned: ["battery", "charg", "power", "last", "plug", "hours", "runtime", "cell"],
            complaints: [
                "The battery makes it to lunchtime before I have to plug it in again.",
                "By the second week the battery was giving me about half of what the box promises.",
                "I end up charging the battery every single evening, even though it was sold as lasting a week.",
                "The battery goes from full to empty on one ride to work and back.",
                "After a month the battery holds a charge for maybe two hours.",
            ],
            praise: [
                "Not once did the battery run out during a three-day hiking trip.",
                "I never have to think about the battery; a charge on Sunday gets me to Friday.",
                "No complaints about the battery at all, it outlasts my phone by days.",
                "The battery did not die even once on a twelve-hour flight.",
                "The battery is not something I worry about anymore, it easily goes a full week.",
            ],
            neutral: [
                "The battery is a replaceable AA cell, and a spare one comes in the box.",
                "I have only had it for two days, so I cannot say much about the battery yet.",
                "The manual says to fully charge the battery before first use, which I did.",
                "The battery compartment is on the back, under a small screw.",
            ]),
        Topic(
            keyword: "delivery", phrase: "the delivery", products: products,
            banned: ["deliver", "arriv", "ship", "courier", "package", "box", "came", "post", "order"],
            complaints: [
                "Delivery took nineteen days, although checkout promised three to five.",
                "The delivery driver left it in the rain outside the gate, and the cardboard was soaked through.",
                "I stayed home two full days for a delivery window that came and went without anyone showing up.",
                "The delivery was marked as completed a day before anything reached me.",
            ],
            praise: [
                "Delivery was not slow at all: ordered Monday morning, on my desk Tuesday.",
                "Never had a delivery this quick; it came the same evening.",
                "No delivery drama this time, the driver even called ahead.",
                "The delivery came a day earlier than promised, well wrapped.",
            ],
            neutral: [
                "Delivery was handled by a local courier I had not heard of before.",
                "I picked the standard delivery option at checkout.",
                "Delivery is free above a certain order value, which is why I added a second item.",
            ]),
        Topic(
            keyword: "customer service", phrase: "customer service", products: products,
            banned: ["customer service", "support", "agent", "help", "warranty", "contact", "replacement", "phone"],
            complaints: [
                "Customer service took eleven days to answer a simple question about the warranty.",
                "Customer service asked me for the same photos three times and then closed the case.",
                "I spent forty minutes on hold with customer service only to be told to send an email instead.",
                "Customer service promised a call back on Friday; it is now Wednesday.",
            ],
            praise: [
                "Customer service did not make me jump through hoops; a replacement was on its way within the hour.",
                "Not a single scripted answer from customer service, the agent actually read my message.",
                "Customer service sorted out a missing part the same day.",
                "No complaints about customer service, they fixed the order mix-up in one email.",
            ],
            neutral: [
                "I have not needed to contact customer service so far.",
                "Customer service is reachable by chat and by phone on weekdays.",
                "The leaflet in the box lists the customer service number.",
            ]),
    ]

    static let products = [
        "wireless earbuds", "bike light", "electric toothbrush", "smartwatch", "portable speaker", "headlamp",
        "desk fan", "game controller", "office chair", "standing desk",
    ]

    /// Sentences about other aspects, good and bad (so a review's overall tone says nothing about the topic).
    static let otherSentences = [
        "The fit is snug and it stays in place.", "The color is a bit darker than in the photos.",
        "Setup took two minutes with the app.", "The buttons feel cheap and rattle a little.",
        "Sound is clear, with more bass than I expected.", "The strap started fraying after a few weeks.",
        "The instructions are short but clear.", "It is lighter than my old one.",
        "The app keeps asking me to rate it, which is annoying.", "For the price it is a fair deal.",
        "The finish picks up fingerprints easily.", "My kids love the bright colors.",
        "The clip broke on day three, glue fixed it.", "It is quieter than the previous model.",
        "The case is sturdy and feels premium.", "The text on the display is small for my eyes.",
    ]

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let topic = rng.pick(topics)
        let total = rng.int(in: 5...10)
        let complaints = rng.int(
            in: max(1, total - topic.praise.count - topic.neutral.count)...min(topic.complaints.count, total - 2))
        let rest = total - complaints
        let praiseCount = rng.int(in: max(1, rest - topic.neutral.count)...min(topic.praise.count, rest - 1))
        let neutralCount = rest - praiseCount
        let topical =
            rng.shuffled(topic.complaints).prefix(complaints) + rng.shuffled(topic.praise).prefix(praiseCount)
            + rng.shuffled(topic.neutral).prefix(neutralCount)
        let filler = otherSentences.filter { sentence in
            !topic.banned.contains { sentence.lowercased().contains($0) }
        }
        func review(_ topicSentence: String?) -> String {
            var sentences = Array(rng.shuffled(filler).prefix(rng.int(in: topicSentence == nil ? 2...4 : 1...2)))
            if let topicSentence { sentences.insert(topicSentence, at: rng.int(in: 0...sentences.count)) }
            return sentences.joined(separator: " ")
        }
        let product = rng.pick(topic.products)
        // A review's header takes 71 bytes, the product's name and the author's (5 on average).
        let header = 71 + product.utf8.count
        var bodies = [String]()
        var bytes = 0
        while bytes < sizeBytes - total * (header + 150) {
            let body = review(nil)
            bytes += body.utf8.count + header
            bodies.append(body)
        }
        for sentence in topical {
            bodies.insert(review(sentence), at: rng.int(in: 0...bodies.count))
        }
        var number = rng.int(in: 10_000...60_000)
        let startDay = LogGenerator.daysFromCivil(year: 2026, month: 1, day: 1)
        let documents = bodies.map { body -> String in
            number += rng.int(in: 1...5)
            return "### REV-\(number)\nReview REV-\(number) of the \(product)\n"
                + "Date: \(LogGenerator.date(days: startDay + rng.int(in: 0...300)))\n"
                + "Author: \(rng.pick(Vocabulary.people))\n\(body)\n"
        }
        let query = rng.pick([
            "Of the reviews that mention \(topic.phrase), how many complain about it?",
            "Some reviews talk about \(topic.phrase). How many of those reviews are complaints about "
                + "\(topic.phrase)?",
            "How many reviews find fault with \(topic.phrase)? Count only reviews that mention \(topic.phrase) "
                + "and complain about it.",
        ])
        return GeneratedTask(
            query: query, context: .documents(documents), answer: String(complaints), answerKind: .integer)
    }
}
